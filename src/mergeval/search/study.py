"""The search's trials: an Optuna study stored in the workspace, each trial a plain recipe.

    trials = Trials(plan, log=print)          # opens (or resumes) .mergeval/search/<study>/
    trials.run(evaluate, stats, keep)         # asks, builds, answers, grades until --trials are done
                                              # (--parallel N: N trials' stages at once, in threads)

Each trial's values make a concrete recipe (plain mergekit YAML), written once to
.mergeval/search/<study>/trials/<space stem>-<content key>.yaml and planned from there like
any recipe, so its build → answer → grade are the sweep's own cached stages: a trial that
repeats an earlier recipe costs nothing. `evaluate(plan, stats)` runs those stages for the
plan's models and yields (model, failure or None): the Prefect flow passes its tasks
(flows/recipe.models_in_order), the engine its plain loop (stages.models_direct).

Storage: Optuna's JournalStorage on a JournalFileBackend, one JSON line per operation, made
durable with fsync before Optuna goes on. A SIGKILL can at worst cut the last line short: it is
cut off on the next open (the workspace lock says nobody else writes). The journal's lock is an
flock, which the kernel drops when its holder dies (Optuna's own symlink lock would be left
behind and wait out a 30 s grace period). Resuming: a trial still RUNNING in the storage was
cut off by a kill; it is marked FAIL (user attr `interrupted`) and its values are asked again
first, so the sampler's history is what an uninterrupted search would have had. Trials that
finished (COMPLETE, or FAIL in one of their stages) are never run again; `retry_failed` asks a
stage-failed trial's values again, when its error is fixed. The sampler is rebuilt before
every ask with a seed derived from --seed and the number of finished trials: TPE and random
sampling see only finished trials, so a resumed search should ask what an uninterrupted one
would have (by design; the tests check that no finished trial runs again, not this).

--parallel N: N trials at once in this process. Optuna is asked and told in the caller's thread
only (the journal's flock serialises any other process); each trial's stages run in a worker
thread. Under the Prefect flow, GPU work still goes one model at a time (flows/recipe.GPU_LOCK),
so what overlaps is one trial's merge with another's answering and grading; the engine loop has
no such lock. The sampler's seed then counts running trials too, and TPE uses its constant liar.
With a work pool (flows/search.py), `evaluate` starts the trial as a child flow run and waits
for it in that worker thread: the same loop, the trials' stages on other boxes.
"""

from __future__ import annotations

import contextvars
import fcntl
import math
import os
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

from mergeval.core import store
from mergeval.core.hashing import content_hash
from mergeval.engine import stages
from mergeval.inputs import check_memo, model_dirs
from mergeval.inputs.recipes import read_recipe
from mergeval.search.request import SearchPlan
from mergeval.search.space import Dim, recipe_text

Evaluate = Callable[..., Iterator]  # (plan, stats) → (candidate, failure or None) per model


def journal_path(plan: SearchPlan) -> Path:
    return plan.folder / "journal.log"


def _cut_torn_tail(path: Path) -> None:
    """A journal whose last line was cut short by a kill: drop that partial line."""
    if not path.exists() or path.stat().st_size == 0:
        return
    data = path.read_bytes()
    if not data.endswith(b"\n"):
        with open(path, "r+b") as f:
            f.truncate(data.rfind(b"\n") + 1)
            f.flush()
            os.fsync(f.fileno())


def _flock_lock(path: Path):
    from optuna.storages.journal._file import BaseJournalFileLock  # not re-exported; JournalFileBackend takes one

    class FlockLock(BaseJournalFileLock):
        """Optuna's journal lock as an flock: released by the kernel even after a SIGKILL."""

        def __init__(self) -> None:
            self._file = None

        def acquire(self) -> bool:
            self._file = open(f"{path}.flock", "a")
            fcntl.flock(self._file, fcntl.LOCK_EX)
            return True

        def release(self) -> None:
            if self._file is not None:
                fcntl.flock(self._file, fcntl.LOCK_UN)
                self._file.close()
                self._file = None

    return FlockLock()


def open_study(plan: SearchPlan):
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    path = journal_path(plan)
    path.parent.mkdir(parents=True, exist_ok=True)
    _cut_torn_tail(path)
    storage = JournalStorage(JournalFileBackend(str(path), lock_obj=_flock_lock(path)))
    return optuna.create_study(study_name=plan.study_name, storage=storage, direction="maximize", load_if_exists=True)


def make_sampler(plan: SearchPlan, finished: int, parallel: bool = False):
    """`finished`: trials finished or running (one search: the finished ones). In parallel,
    TPE lies that running trials scored badly (constant_liar), so it does not ask them again."""
    import optuna

    r = plan.request
    seed = int(content_hash({"seed": r.seed, "finished": finished})[:8], 16)
    if r.sampler == "cmaes":  # its state lives in the trials' system attributes: one seed throughout
        return optuna.samplers.CmaEsSampler(seed=r.seed, warn_independent_sampling=False)
    if r.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=r.startup_trials, constant_liar=parallel)


def suggest(trial, d: Dim):
    if d.kind == "choice":
        return trial.suggest_categorical(d.name, d.labels)
    if d.kind == "int":
        return trial.suggest_int(d.name, int(d.low), int(d.high), step=int(d.step or 1))
    return d.concrete(trial.suggest_float(d.name, d.low, d.high, step=d.step))


def finished(trial) -> bool:
    """COMPLETE, or failed in a stage: done, never run again (a kill's FAIL is asked again)."""
    from optuna.trial import TrialState

    return trial.state == TrialState.COMPLETE or (
        trial.state == TrialState.FAIL and "failure" in trial.user_attrs and not trial.user_attrs.get("retried"))


class Trials:
    def __init__(self, plan: SearchPlan, log=print):
        self.plan, self.log = plan, log
        self.study = open_study(plan)
        self.fingerprints = {str(p): model_dirs.fingerprint(p) for p in plan.space.sources}
        self.ran_now: list[int] = []  # trial numbers this process ran
        self.recovered = self._recover()

    def _recover(self) -> list[int]:
        """Trials a kill left RUNNING (and, with retry_failed, stage failures): FAIL, re-asked."""
        from optuna.trial import TrialState

        again = []
        storage = self.study._storage
        for t in self.study.get_trials(deepcopy=False):
            stale = t.state == TrialState.RUNNING  # WAITING (enqueued, never asked) is simply asked next
            failed = self.plan.request.retry_failed and finished(t) and t.state == TrialState.FAIL
            if not (stale or failed):
                continue
            storage.set_trial_user_attr(t._trial_id, "interrupted" if stale else "retried", True)
            if stale:
                storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
            self.study.enqueue_trial(t.params, user_attrs={"retry_of": t.number})
            again.append(t.number)
            self.log(f"trial {t.number} was {'cut off by a kill' if stale else 'failed'}: its values are asked again")
        return again

    def done(self) -> int:
        return sum(finished(t) for t in self.study.get_trials(deepcopy=False))

    def run(self, evaluate: Evaluate, stats: dict, keep: int | None) -> None:
        """Ask, evaluate and tell until --trials are finished, --parallel trials at a time.

        Optuna is asked and told in this thread only; each trial's stages run in a worker
        thread, in a copy of this thread's context (so a Prefect flow's tasks are its tasks).
        A trial whose recipe is one still running waits for it, then finds its stages cached."""
        total, width = self.plan.request.trials, self.plan.request.parallel or 1
        running: dict[Future, _Pending] = {}
        with ThreadPoolExecutor(max_workers=width, thread_name_prefix="trial") as pool:
            while True:
                while len(running) < width and self.done() + len(running) < total:
                    self.study.sampler = make_sampler(self.plan, self.done() + len(running), parallel=width > 1)
                    pending = self._start()
                    if pending is None:  # refused: told FAIL, finished
                        continue
                    same = next((f for f, p in running.items() if p.name == pending.name), None)
                    context = contextvars.copy_context()
                    running[pool.submit(context.run, _evaluate, evaluate, pending, same)] = pending
                if not running:
                    return
                ended, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in sorted(ended, key=lambda f: running[f].trial.number):
                    self._finish(running.pop(future), *future.result(), stats, total)
                    self.prune(keep, busy={p.model_path for p in running.values()})

    def _start(self) -> _Pending | None:
        """Ask one trial and plan it (None: its recipe was refused, and it is told so)."""
        from optuna.trial import TrialState

        plan, ws = self.plan, self.plan.base.workspace
        trial = self.study.ask()
        started = time.monotonic()
        instance = plan.space.instantiate(lambda d: suggest(trial, d))
        name = f"{plan.space.stem}-{content_hash(instance)[:10]}"
        path = plan.trials_dir / f"{name}.yaml"
        if not path.exists():  # the content names the file: a repeat finds it written
            store.write_atomic(path, recipe_text(instance, header=f"A trial of the search space {plan.space.path.name}."))
        trial.set_user_attr("recipe", name)
        memos: list = []
        recipe, problems = read_recipe(path, ws, memos=memos)
        if recipe is None:  # the corners passed, this point did not: a combination the checks could not foresee
            trial.set_user_attr("failure", "recipe: " + "; ".join(p.message for p in problems))
            self.study.tell(trial, state=TrialState.FAIL)
            self.log(f"trial {trial.number}: its recipe is refused: {problems[0]}")
            return None
        check_memo.remember(memos)
        one = plan.trial_plan(recipe, self.fingerprints)
        [cand] = one.candidates
        trial.set_user_attr("model_path", str(cand.path))
        return _Pending(trial, name, cand, one, started)

    def _finish(self, p: _Pending, failure: dict | None, own: dict, stats: dict, total: int) -> None:
        from optuna.trial import TrialState

        trial, plan = p.trial, self.plan
        _add(stats, own)
        seconds = time.monotonic() - p.started
        trial.set_user_attr("seconds", round(seconds, 3))
        trial.set_user_attr("executed", {s: own[s]["executed"] for s in stages.STAGES})
        self.ran_now.append(trial.number)
        n = self.done() + 1
        score = None if failure else stages.mean_score(p.plan, p.cand)
        if failure or not math.isfinite(score):
            why = f"{failure['stage']}: {failure['error']}" if failure else "grade: no item was scored"
            trial.set_user_attr("failure", why)
            self.study.tell(trial, state=TrialState.FAIL)
            self.log(f"trial {trial.number} ({n}/{total}) failed: {why}")
            return
        self.study.tell(trial, score)
        values = ", ".join(f"{k}={_short(v)}" for k, v in trial.params.items())
        self.log(f"trial {trial.number} ({n}/{total}): {values} → {score:.3f} on {len(plan.search_items)} "
                 f"search items in {seconds:.1f}s" + ("" if any(own[s]["executed"] for s in stages.STAGES) else " (all cached)"))

    def ranked(self) -> list:
        """Complete trials, best first, one per distinct recipe (its first trial)."""
        from optuna.trial import TrialState

        done = [t for t in self.study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE]
        best, seen = [], set()
        for t in sorted(done, key=lambda t: (-t.value, t.number)):
            if t.user_attrs["recipe"] not in seen:
                seen.add(t.user_attrs["recipe"])
                best.append(t)
        return best

    def prune(self, keep: int | None, busy: set = frozenset()) -> None:
        """Merged weights of trials outside the top `keep` are deleted (they rebuild identically),
        except those a running trial uses (`busy`: their model folders)."""
        if keep is None:
            return
        for t in self.ranked()[keep:]:
            path = Path(t.user_attrs.get("model_path", ""))
            if t.user_attrs.get("model_path") and path.exists() and path not in busy:
                store.remove_tree(path)


@dataclass
class _Pending:
    """A trial asked and planned, its stages not yet run."""

    trial: Any
    name: str  # its recipe's name (content key): a repeat of a running trial has the same
    cand: Any
    plan: Any  # the one-model sweep plan of this trial
    started: float

    @property
    def model_path(self) -> Path:
        return self.cand.path


def _evaluate(evaluate: Evaluate, p: _Pending, same: Future | None) -> tuple[dict | None, dict]:
    """One trial's build → answer → grade (in a worker thread): (failure or None, its stage counts)."""
    if same is not None:  # the same recipe is being built: wait, then its stages are cached
        wait([same])
    own = stages.empty_stats()
    [(_, failure)] = list(evaluate(p.plan, own))
    return failure, own


def _add(total: dict, own: dict) -> None:
    for stage, counters in own.items():
        for k, v in counters.items():
            total[stage][k] += v


def _short(v) -> str:
    return f"{v:.3g}" if isinstance(v, float) else str(v)
