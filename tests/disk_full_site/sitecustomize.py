"""A full disk inside merge workers (tests/disk_faults.py), for tests that put this folder on
PYTHONPATH. Python runs this file at start-up in every process; it acts only in
`python -m mergeval.engine.merge_worker CONFIG OUT` whose config names MERGEVAL_TEST_FULL_DISK_RECIPE
(any merge if unset), giving OUT room for MERGEVAL_TEST_FULL_DISK_BYTES bytes.

safetensors writes weights from Rust, past Python's open(); so its save_file is replaced by
the same bytes (safetensors' own serializer) written through the limited open().
"""

import os
import sys

argv = getattr(sys, "orig_argv", [])
wanted = os.environ.get("MERGEVAL_TEST_FULL_DISK_RECIPE", "")
if "mergeval.engine.merge_worker" in argv and wanted in argv[argv.index("mergeval.engine.merge_worker") + 1]:
    from pathlib import Path

    import safetensors.torch

    from tests import disk_faults

    out = Path(argv[argv.index("mergeval.engine.merge_worker") + 2])
    disk_faults.install(disk_faults.Budget(int(os.environ["MERGEVAL_TEST_FULL_DISK_BYTES"])), out)

    def save_file(tensors, filename, metadata=None):
        data = safetensors.torch.save(tensors, metadata=metadata)
        with open(filename, "wb") as f:
            f.write(data)

    safetensors.torch.save_file = save_file
