"""A full disk inside merges (tests/disk_faults.py), for tests that put this folder on PYTHONPATH.

Python runs this file at start-up in every process. It acts only where merges run: in a merge
server (`python -m mergeval.engine.merge_daemon`, which forks each merge from itself) it wraps
merge_worker.main, so each forked merge installs the fault; in `python -m
mergeval.engine.merge_worker CONFIG OUT` (MERGEVAL_MERGE_FORK=0) it installs it at once. Only a
merge whose config names MERGEVAL_TEST_FULL_DISK_RECIPE (any merge if unset) is hit, giving OUT
room for MERGEVAL_TEST_FULL_DISK_BYTES bytes; with that unset (space freed), none is.

safetensors writes weights from Rust, past Python's open(); so its save_file is replaced by
the same bytes (safetensors' own serializer) written through the limited open().
"""

import os
import sys


def _fill_disk_under(out: str) -> None:
    from pathlib import Path

    import safetensors.torch

    from tests import disk_faults

    disk_faults.install(disk_faults.Budget(int(os.environ["MERGEVAL_TEST_FULL_DISK_BYTES"])), Path(out))

    def save_file(tensors, filename, metadata=None):
        data = safetensors.torch.save(tensors, metadata=metadata)
        with open(filename, "wb") as f:
            f.write(data)

    safetensors.torch.save_file = save_file


def _hit(config: str) -> bool:
    return "MERGEVAL_TEST_FULL_DISK_BYTES" in os.environ and os.environ.get("MERGEVAL_TEST_FULL_DISK_RECIPE", "") in config


argv = getattr(sys, "orig_argv", [])
if "mergeval.engine.merge_worker" in argv and _hit(argv[argv.index("mergeval.engine.merge_worker") + 1]):
    _fill_disk_under(argv[argv.index("mergeval.engine.merge_worker") + 2])
elif "mergeval.engine.merge_daemon" in argv:
    from mergeval.engine import merge_worker

    _merge = merge_worker.main

    def _merge_on_a_full_disk(worker_argv):
        if _hit(worker_argv[0]):  # the environment of this merge's request
            _fill_disk_under(worker_argv[1])
        return _merge(worker_argv)

    merge_worker.main = _merge_on_a_full_disk
