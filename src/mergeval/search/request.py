"""One search request and its plan: the space, the suite split in two, the judge, the study.

    request = SearchRequest.from_parameters(workspace="/data/ws", space="merge_configs/search/toy_ties.yaml")
    plan = request.plan()        # every input read and checked (InputError, file:line, if not)
    plan.search_items            # the part that scores trials
    plan.heldout_items           # the part that ranks the finalists and the sources, only that

The suite is split per skill by a fixed seed (`split_seed`): an item is held out when the hash
of (seed, its id) is among the lowest `holdout` fraction of its skill. Ids are paths in the
suite, so editing an item never moves it to the other part. Trials never see a held-out item,
so the finalists' held-out scores are not fitted to the noise the search climbed on.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from mergeval.answering.settings import GenerationSettings
from mergeval.core.errors import InputError
from mergeval.core.hashing import content_hash
from mergeval.core.workspace import Workspace
from mergeval.engine.plan import SweepPlan, candidates_for
from mergeval.engine.request import GENERATION_PARAMETERS, REAL_JUDGE, default_judge, parse_keep
from mergeval.inputs.items import Item, load_items
from mergeval.proctora.settings import load_settings
from mergeval.search.space import Space, read_space

# The answers' settings among the flow's flat parameters; `seed` there is the sampler's, and the
# answers keep their default seed (greedy decoding does not use it).
ANSWER_PARAMETERS = tuple(k for k in GENERATION_PARAMETERS if k != "seed")
SAMPLERS = ("tpe", "cmaes", "random")


def split_items(items: list[Item], holdout: float, seed: int) -> tuple[tuple[Item, ...], tuple[Item, ...]]:
    """(search part, held-out part), stratified by skill; both keep the suite's order."""
    held: set[str] = set()
    for skill in dict.fromkeys(it.skill for it in items):
        ids = sorted((it.id for it in items if it.skill == skill), key=lambda i: content_hash({"seed": seed, "id": i}))
        n = len(ids)
        k = min(max(round(holdout * n), 1), n - 1) if n > 1 else 0
        held.update(ids[:k])
    return tuple(it for it in items if it.id not in held), tuple(it for it in items if it.id in held)


@dataclass(frozen=True)
class SearchRequest:
    workspace: Path
    space: str  # the space file, as the user wrote it (relative to the workspace)
    trials: int = 24
    sampler: str = "tpe"
    seed: int = 0
    items: str = "items/toy"
    judge: str = REAL_JUDGE  # from_parameters: default_judge() (the toy Proctora for items/toy) when none is named
    finalists: int = 3
    holdout: float = 0.5
    split_seed: int = 0
    keep: str = "top-3"
    startup_trials: int = 8  # TPE: random trials before it models the scores
    retry_failed: bool = False  # ask a trial whose stage failed again (with the same values)
    parallel: int | None = None  # trials in flight at once; None: 1, or with a pool its worker count (or 2)
    pool: str | None = None  # a work pool: each trial a child flow run (flows/trial.py) that its workers take
    generation: GenerationSettings = field(default_factory=GenerationSettings)

    @classmethod
    def from_parameters(cls, workspace: str | Path | None = None, **params) -> SearchRequest:
        gen = {k: params.pop(k) for k in ANSWER_PARAMETERS if k in params and params[k] is not None}
        root = Path(workspace).resolve() if workspace else Workspace.find().root
        params = {k: v for k, v in params.items() if v is not None}
        params.setdefault("judge", default_judge(root, params.get("items", cls.items)))
        if not params.get("pool"):  # in one process: one trial at a time unless told; a pool's flow asks it
            params.setdefault("parallel", 1)
        return cls(root, generation=GenerationSettings(**gen), **params)

    def parameters(self) -> dict:
        """Flat and JSON-able: the search flow's parameters."""
        flat = {k: v for k, v in asdict(self).items() if k != "generation"}
        flat.update(workspace=str(self.workspace), **{k: getattr(self.generation, k) for k in ANSWER_PARAMETERS})
        return flat

    @property
    def ws(self) -> Workspace:
        return Workspace(self.workspace)

    def check(self) -> None:
        """Raise ValueError saying what to fix: the settings that need no file read."""
        parse_keep(self.keep)
        if self.sampler not in SAMPLERS:
            raise ValueError(f"--sampler must be one of {', '.join(SAMPLERS)}, not {self.sampler!r}")
        if self.trials < 1 or self.finalists < 1 or self.startup_trials < 0 or (self.parallel is not None and self.parallel < 1):
            raise ValueError("--trials, --finalists and --parallel must be 1 or more")
        if not 0 < self.holdout < 1:
            raise ValueError(f"--holdout is the held-out fraction of each skill, between 0 and 1, not {self.holdout}")

    def plan(self) -> SearchPlan:
        ws = self.ws
        problems = []
        space, found = read_space(ws.resolve(self.space), ws)
        problems += found
        items = judge = None
        try:
            items = load_items(ws.resolve(self.items))
        except InputError as e:
            problems += e.problems
        try:
            judge = load_settings(ws.resolve(self.judge), ws)
        except InputError as e:
            problems += e.problems
        if problems:
            raise InputError(problems)
        if self.sampler == "cmaes" and not space.continuous:
            raise ValueError(f"--sampler cmaes needs a space of ranges only; {space.path} has a choice "
                             f"({next(d.name for d in space.dims if d.kind == 'choice')}): use tpe or random")
        search, held = split_items(items, self.holdout, self.split_seed)
        base = SweepPlan(ws, ws.resolve(self.space), ws.resolve(self.items), ws.resolve(self.judge), search, judge,
                         judge.fingerprint(), self.generation, (), ())
        return SearchPlan(self, space, base, search, held)

    def settings_record(self, plan: SearchPlan) -> dict:
        return {"search": {k: v for k, v in self.parameters().items() if k not in ("workspace", *ANSWER_PARAMETERS)},
                "items": self.items, "judge": self.judge, "keep": self.keep, "generation": asdict(self.generation),
                "judge_settings": plan.base.judge.model_dump(exclude={"template_text", "trust_remote_code"})}


@dataclass(frozen=True)
class SearchPlan:
    request: SearchRequest
    space: Space
    base: SweepPlan  # items = the search part; no candidates: a trial's plan adds its own
    search_items: tuple[Item, ...]
    heldout_items: tuple[Item, ...]

    @property
    def study_name(self) -> str:
        """What a study's trials depend on, --trials aside: the same command resumes it."""
        r = self.request
        key = content_hash({"space": self.space.fingerprint(), "sampler": r.sampler, "seed": r.seed,
                            "startup": r.startup_trials if r.sampler == "tpe" else None,
                            "items": [it.hash for it in self.search_items], "judge": self.base.judge_fingerprint,
                            "generation": self.base.generation.fingerprint()})
        return f"{self.space.stem}-{key[:12]}"

    @property
    def folder(self) -> Path:
        return self.base.workspace.state / "search" / self.study_name

    @property
    def trials_dir(self) -> Path:
        return self.folder / "trials"

    def trial_plan(self, recipe, fingerprints: dict[str, str] | None = None) -> SweepPlan:
        """One trial as a one-model sweep plan: its recipe's merge (no sources) on the search part.
        The parent plans it, and so does a trial's child flow run on a worker (the same keys)."""
        [cand] = candidates_for(self.base.workspace, [recipe], fingerprints, sources=False, merge=self.base.merge)
        return replace(self.base, configs=self.trials_dir, candidates=(cand,), recipes=(recipe,))

    def heldout_plan(self, recipes) -> SweepPlan:
        """A plain sweep plan: the finalists' recipes and their sources, on the held-out part."""
        cands = candidates_for(self.base.workspace, list(recipes), merge=self.base.merge)
        return replace(self.base, configs=self.trials_dir, items=self.heldout_items, candidates=tuple(cands),
                       recipes=tuple(recipes))
