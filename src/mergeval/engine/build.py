"""The build stage: one recipe → one merged model directory, named by what produced it.

    from mergeval.engine.build import build
    built = build(recipe, workspace)      # BuiltModel(path=..., key=..., cached=False)

Each merge runs in a process of its own (mergeval.engine.merge_worker), forked from a server
that has imported torch and mergekit once (merge_server.py). The output appears under a
temporary name, is renamed into place, and gets its completion marker last, so a merge
killed at any point leaves nothing that counts as built. A MoE recipe is built the same way
by mergekit-moe's code; a multi-stage recipe is one such build per stage, each cached under
its own content key (stage_builds.py), so only the stages whose content changed are built.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import re
import time
from dataclasses import dataclass, replace
from importlib.metadata import version
from pathlib import Path

import yaml

from mergeval.core import store
from mergeval.core.hashing import content_hash
from mergeval.core.workspace import Workspace
from mergeval.engine import merge_server, stage_builds
from mergeval.inputs import model_dirs
from mergeval.inputs.recipes import Recipe

DEFAULT_SEED = stage_builds.DEFAULT_SEED  # every merge gets a seed, so stochastic methods rebuild bit-identical


class BuildError(RuntimeError):
    """A merge that could not be built; the message names the recipe and says why."""


@dataclass(frozen=True)
class MergeSettings:
    """How mergekit runs (its MergeOptions), from a sweep file's `merge:` or the CLI.

    Only `dtype` changes the merged weights, so only it enters the build key (and only when
    set: every key made without it stays valid); the rest change speed, memory or file layout.
    """

    device: str = "cpu"  # where tensors are merged: cpu, cuda, cuda:1
    dtype: str | None = None  # the merge's out_dtype (float32, bfloat16, float16); None: the recipe's
    lazy_unpickle: bool = False  # mergekit's experimental lazy loader of .bin pickles: less memory
    low_cpu_memory: bool = False  # keep results on the accelerator instead of copying back
    shard_size: str | None = None  # mergekit's out_shard_size, e.g. "2B" or "5B"; None: mergekit's 5B


DTYPES = ("float32", "float16", "bfloat16")


@dataclass(frozen=True)
class BuiltModel:
    name: str
    key: str
    path: Path
    cached: bool
    seconds: float
    repaired: str | None = None  # rebuilt because the cached merge was damaged: what was wrong
    stages: tuple[tuple[str, bool], ...] = ()  # multi-stage: (earlier stage, found built) in build order


def build_key(recipe: Recipe, fingerprints: dict[str, str] | None = None, merge: MergeSettings | None = None) -> str:
    """Hash of the normalized recipe, its sources' content, mergekit's version and the seed
    (and the sweep's merge dtype, when it sets one).

    Paths do not enter the key, so a moved workspace or a renamed recipe file still hits.
    """
    if fingerprints is None:
        fingerprints = {str(p): model_dirs.fingerprint(p) for p in recipe.sources}
    dtype = {"out_dtype": merge.dtype} if merge is not None and merge.dtype is not None else {}
    if recipe.kind == "multi-stage":  # the final stage's key: it chains the others'
        key = stage_builds.stage_keys(recipe, fingerprints)[-1]
        return content_hash({"stages": key, **dtype}) if dtype else key
    return content_hash({
        "recipe": stage_builds.with_fingerprints(recipe.config, {p: "model:" + f for p, f in fingerprints.items()}),
        "mergekit": version("mergekit"),
        "seed": seed_of(recipe),
        **({"kind": recipe.kind} if recipe.kind != "plain" else {}),  # plain keys as they always were
        **dtype,
    })


def seed_of(recipe: Recipe) -> int:
    return DEFAULT_SEED if recipe.random_seed is None else recipe.random_seed


def output_dir(workspace: Workspace, recipe: Recipe, key: str) -> Path:
    return workspace.state / "models" / f"{recipe.name}-{key[:16]}"


def estimate_bytes(recipe: Recipe, config: dict | None = None, sources: tuple[Path, ...] | None = None) -> int:
    """Room a merge needs: its output tensors in the output dtype (out_dtype, else dtype, else
    as stored), from the sources' safetensors headers; a franken-merge counts each slice's
    layers from the model that slice takes them from; a MoE at most its base and every expert
    together. Plus 10 % and 1 MiB for the rest. (config, sources): one stage of a multi-stage."""
    config, sources = config or recipe.config, sources or recipe.sources
    if recipe.kind == "moe":
        return int(sum(model_dirs.weights_size(p) for p in sources) * 1.1) + (1 << 20)
    out_bytes = _DTYPE_BYTES.get(str(config.get("out_dtype") or config.get("dtype") or ""))
    sizes = {p: model_dirs.tensor_sizes(p) for p in sources}
    if any(v is None for v in sizes.values()):
        return _estimate_from_files(config, sources)

    def total(tensors: dict) -> int:
        return sum(n * (out_bytes or per) for n, per in tensors.values())

    slices = config.get("slices") or []
    if not slices:
        return int(max(total(t) for t in sizes.values()) * 1.1) + (1 << 20)
    takes = [(_ref_path(s["sources"][0]["model"]), s["sources"][0].get("layer_range")) for s in slices]
    if any(p not in sizes or r is None for p, r in takes):
        return _estimate_from_files(config, sources)
    need = total({k: v for k, v in sizes[takes[0][0]].items() if _LAYER.search(k) is None})  # embeddings, head, norm
    for path, (a, b) in takes:
        layer_tensors = sizes[path]
        need += total({k: v for k, v in layer_tensors.items()
                       if (m := _LAYER.search(k)) is not None and a <= int(m.group(1)) < b})
    return int(need * 1.1) + (1 << 20)


def _ref_path(ref) -> Path | None:
    """The folder a (resolved) model reference of a recipe's config names."""
    if isinstance(ref, dict):
        ref = ref.get("model")
        ref = ref.get("path") if isinstance(ref, dict) else ref
    return Path(ref) if isinstance(ref, str) else None


_LAYER = re.compile(r"\.layers\.(\d+)\.")
_DTYPE_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2, "float64": 8, "torch.float32": 4, "torch.float16": 2,
                "torch.bfloat16": 2, "torch.float64": 8}


def _estimate_from_files(config: dict, sources: tuple[Path, ...]) -> int:
    """Without safetensors headers: the largest source, scaled by output layers for franken-merges."""
    largest = max(model_dirs.weights_size(p) for p in sources)
    slices = config.get("slices") or []
    if slices:
        out_layers = sum(
            s["sources"][0]["layer_range"][1] - s["sources"][0]["layer_range"][0] for s in slices
        )
        src_layers = model_dirs.num_layers(sources[0]) or out_layers
        largest = largest * max(1.0, out_layers / src_layers)
    return int(largest * 1.1) + (1 << 20)


def _clear_stale_temps(parent: Path, stem: str) -> None:
    """Remove what a killed build left (`.tmp-<stem>-<pid>` and its config file)."""
    for tmp in parent.glob(f".tmp-{stem}-*"):
        pid = tmp.name.rsplit("-", 1)[-1].split(".")[0]
        if pid.isdigit() and _pid_alive(int(pid)):
            continue  # another build of the same recipe is running right now
        if tmp.is_dir():
            store.remove_tree(tmp)
        else:
            tmp.unlink(missing_ok=True)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    return True


def build(
    recipe: Recipe, workspace: Workspace, *, device: str | None = None, key: str | None = None,
    trust_remote_code: bool = False,  # mergekit may run the sources' own code: only when the user named them
    merge: MergeSettings | None = None,
) -> BuiltModel:
    merge = merge or MergeSettings()
    if device is not None:
        merge = replace(merge, device=device)
    key = key or build_key(recipe, merge=merge)
    if recipe.kind != "multi-stage":
        return _build_one(recipe, recipe.config, recipe.sources, seed_of(recipe), output_dir(workspace, recipe, key),
                          key, merge, trust_remote_code)
    fingerprints = {str(p): model_dirs.fingerprint(p) for p in recipe.sources}
    keys = stage_builds.stage_keys(recipe, fingerprints)
    outputs: dict[str, Path] = {}
    done, seconds = [], 0.0
    for stage, stage_key in zip(recipe.stages[:-1], keys):
        folder = stage_builds.stage_dir(workspace, stage_key)
        folder.parent.mkdir(parents=True, exist_ok=True)
        with open(folder.parent / f".{folder.name}.lock", "a") as lock:  # two recipes, one shared stage
            fcntl.flock(lock, fcntl.LOCK_EX)
            one = _build_one(recipe, stage_builds.resolved(stage.config, outputs),
                             stage.sources + tuple(outputs[u] for u in stage.uses), stage_builds.stage_seed(stage),
                             folder, stage_key, replace(merge, dtype=None), trust_remote_code, stage=stage.name)
        outputs[stage.name] = folder
        done.append((stage.name, one.cached))
        seconds += one.seconds
    last = recipe.stages[-1]
    final = _build_one(recipe, stage_builds.resolved(last.config, outputs),
                       last.sources + tuple(outputs[u] for u in last.uses), stage_builds.stage_seed(last),
                       output_dir(workspace, recipe, key), key, merge, trust_remote_code)
    return BuiltModel(recipe.name, key, final.path, final.cached, seconds + final.seconds, final.repaired,
                      stages=tuple(done))


def _build_one(recipe: Recipe, config: dict, sources: tuple[Path, ...], seed: int, final: Path, key: str,
               merge: MergeSettings, trust_remote_code: bool, stage: str | None = None) -> BuiltModel:
    """One mergekit run into `final`, unless it is built and intact there already. An earlier
    stage gets no out_dtype of the sweep's: only the final merge is cast."""
    what = f"stage {stage} of {recipe.name}" if stage else recipe.name
    damaged = None
    if (final / store.MARKER).is_file():
        # a cached merge is about to be loaded for answering: worth one read to trust its bytes
        damaged = store.damage(final)
        if damaged is None:
            return BuiltModel(recipe.name, key, final, cached=True, seconds=0.0)
        WORKER_LOG.warning(f"{what}: the built merge in {final} is damaged ({damaged}): rebuilding")

    final.parent.mkdir(parents=True, exist_ok=True)
    need, free = estimate_bytes(recipe, config, sources), model_dirs.free_bytes(final.parent)
    if need > free:
        raise BuildError(
            f"{recipe.path}: not enough disk for {'stage ' + stage if stage else 'the merge'} under {final.parent}: "
            f"needs about {need / 2**30:.2f} GiB, {free / 2**30:.2f} GiB free"
        )
    _clear_stale_temps(final.parent, final.name)
    store.remove_tree(final)  # renamed into place but killed before its marker: not built
    tmp = final.parent / f".tmp-{final.name}-{os.getpid()}"
    config_file = tmp.parent / f".tmp-{final.name}-{os.getpid()}.yaml"
    started = time.perf_counter()
    try:
        _merge_into(recipe, config, seed, tmp, config_file, merge, trust_remote_code, stage)
        store.write_atomic(tmp / "mergeval_recipe.yaml", recipe.text)
        os.replace(tmp, final)
        seconds = time.perf_counter() - started
        store.mark_complete(final, {"recipe": recipe.name, "key": key, "seconds": round(seconds, 3),
                                    **({"stage": stage} if stage else {})})
    except BaseException as e:  # a failed or interrupted build leaves nothing behind
        store.remove_tree(tmp)
        config_file.unlink(missing_ok=True)
        if not store.is_complete(final):
            store.remove_tree(final)
        if store.is_disk_full(e):
            raise _disk_full(recipe, final, need) from e
        raise
    return BuiltModel(recipe.name, key, final, cached=False, seconds=seconds, repaired=damaged)


def _merge_into(recipe: Recipe, config: dict, seed: int, tmp: Path, config_file: Path, merge: MergeSettings,
                trust_remote_code: bool = False, stage: str | None = None) -> None:
    """Run mergekit (mergekit-moe's build for a MoE) in its own process, writing the merge into `tmp`."""
    store.remove_tree(tmp)
    tmp.mkdir()
    config = dict(config, out_dtype=merge.dtype) if merge.dtype and recipe.kind != "moe" else config
    store.write_atomic(config_file, yaml.safe_dump(config, sort_keys=False))
    argv = [str(config_file), str(tmp), "--seed", str(seed), "--device", merge.device]
    argv += ["--trust-remote-code"] if trust_remote_code else []
    argv += ["--moe"] if recipe.kind == "moe" else []
    argv += ["--lazy-unpickle"] if merge.lazy_unpickle else []
    argv += ["--low-cpu-memory"] if merge.low_cpu_memory else []
    argv += ["--shard-size", merge.shard_size] if merge.shard_size else []
    returncode, output = merge_server.run_merge(argv)
    relay_worker_log(output)
    config_file.unlink(missing_ok=True)
    if returncode != 0 and _says_disk_full(output):
        raise OSError(errno.ENOSPC, _last_error(output))
    if returncode != 0 or not (tmp / "config.json").exists():
        where = f" (stage {stage})" if stage else ""
        raise BuildError(f"{recipe.path}: mergekit{'-moe' if recipe.kind == 'moe' else ''} failed{where}: "
                         f"{_last_error(output)}")


# How a full disk reads in the worker's stderr: Python's OSError, or the Rust I/O error of
# safetensors' writer (which is not an OSError, so only its text tells).
DISK_FULL_SIGNS = ("No space left on device", "[Errno 28]", "os error 28", "StorageFull",
                   "Disk quota exceeded", "[Errno 122]", "os error 122")


def _says_disk_full(stderr: str) -> bool:
    return any(sign in stderr for sign in DISK_FULL_SIGNS)


def _disk_full(recipe: Recipe, final: Path, need: int) -> BuildError:
    free = model_dirs.free_bytes(final.parent)  # measured after the partial merge was removed
    return BuildError(
        f"{recipe.path}: disk full while building {recipe.name} under {final.parent}: needs about "
        f"{store.human_bytes(need)}, {store.human_bytes(free)} free now; nothing of it was kept: "
        "free some space and run the same command again"
    )


# The merge runs in its own process, so its log reaches Prefect's UI only if we pass it on:
# "mergekit" is one of PREFECT_LOGGING_EXTRA_LOGGERS, and this logger is its child.
WORKER_LOG = logging.getLogger("mergekit.worker")


def relay_worker_log(stderr: str) -> None:
    """mergekit's output, minus the progress-bar redraws, at INFO."""
    for line in stderr.splitlines():
        if line.strip() and "\r" not in line and "it/s]" not in line:
            WORKER_LOG.info(line.rstrip())


def _last_error(stderr: str) -> str:
    """mergekit's own message: the last non-empty line of its traceback."""
    lines = [ln.strip() for ln in stderr.strip().splitlines() if ln.strip()]
    return lines[-1] if lines else "no output (killed?)"
