"""One sweep request: everything a sweep is asked to do, as one frozen record.

    request = SweepRequest.from_parameters(workspace="/data/ws", configs="merge_configs/mine")
    request.check()                   # a bad --keep or backend fails before any work
    plan = request.plan()             # every input read and validated (InputError if not)
    flow(**request.parameters())      # the same request as Prefect parameters (flat, for the UI)

The CLI builds it from its options, the flows from their parameters (Prefect shows flat
parameters as a form, so the flows keep them flat and turn them into a request first thing),
regrade from a finished run's settings record. run.json's settings are made from it here,
in `settings_record`, and nowhere else.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

from mergeval.answering import backends
from mergeval.answering.settings import DTYPES as ANSWER_DTYPES
from mergeval.answering.settings import GenerationSettings, effective_device
from mergeval.core.workspace import Workspace
from mergeval.engine.build import DTYPES, MergeSettings
from mergeval.engine.plan import SweepPlan, plan_sweep

# The flows' flat names: into `generation` (answering/settings.py) and `merge` (engine/build.py).
GENERATION_PARAMETERS = ("batch_size", "max_new_tokens", "backend", "endpoint", "served_model", "device",
                         "dtype", "temperature", "top_p", "seed")
MERGE_PARAMETERS = {"merge_device": "device", "merge_dtype": "dtype", "lazy_unpickle": "lazy_unpickle",
                    "low_cpu_memory": "low_cpu_memory", "shard_size": "shard_size"}
REAL_JUDGE = "judge/proctora.yaml"  # the judge for real work
TOY_JUDGE = "judge/toy/proctora.yaml"  # the toy Proctora, the toy suite's judge


def default_judge(workspace: Path, items: str) -> str:
    """The judge a sweep gets when none is named: the toy Proctora for the toy suite (where the
    workspace has it), the real judge's settings for everything else."""
    ws = Workspace(workspace)
    toy = ws.resolve(items).resolve() == (ws.items / "toy").resolve() and ws.resolve(TOY_JUDGE).is_file()
    return TOY_JUDGE if toy else REAL_JUDGE


def one_served_model(name: str) -> str:
    """Why a served model name without {name} or {path} cannot answer a sweep: every sweep
    ranks at least one merge and its sources, and they would all be that one served model."""
    return (f"served model {name!r} is one name for every model of the sweep (each merge and its sources): "
            "all their questions would go to that one served model. Put {path} (each model's folder, the "
            "default, which `transformers serve` loads) or {name} (the model as ranked) in it")


def parse_keep(keep: str) -> int | None:
    """'all' → None (keep every merge), 'none' → 0, 'top-K' → K."""
    if keep == "all":
        return None
    if keep == "none":
        return 0
    if keep.startswith("top-") and keep[4:].isdigit():
        return int(keep[4:])
    raise ValueError(f"--keep must be all, none or top-K, not {keep!r}")


@dataclass(frozen=True)
class SweepRequest:
    workspace: Path
    configs: str = "merge_configs/toy"  # as the user wrote them: relative to the workspace
    items: str = "items/toy"
    judge: str = REAL_JUDGE  # from_parameters: default_judge() when none is named
    keep: str = "top-3"  # merged weights kept on disk: all, none or top-K
    generation: GenerationSettings = field(default_factory=GenerationSettings)
    merge: MergeSettings = field(default_factory=MergeSettings)  # how mergekit runs
    pool: str | None = None  # a work pool: one child flow run per model, taken by its workers
    overlap: bool = True  # in one process: build the next merge while this model is answered
    trust_remote_code: tuple[str, ...] = ()  # models whose folder's Python may run (remote_code.py)

    @classmethod
    def from_parameters(cls, workspace: str | Path | None = None, trust_remote_code=(), **params) -> SweepRequest:
        """From the flat parameters of a flow, a deployment or the CLI (GENERATION_PARAMETERS
        go into `generation`, MERGE_PARAMETERS into `merge`); None means the default; no
        workspace: the nearest one upward from here."""
        gen = {k: params.pop(k) for k in GENERATION_PARAMETERS if k in params}
        merge = {field: params.pop(flat) for flat, field in MERGE_PARAMETERS.items() if flat in params}
        root = Path(workspace).resolve() if workspace else Workspace.find().root
        params = {k: v for k, v in params.items() if v is not None}
        params.setdefault("judge", default_judge(root, params.get("items", cls.items)))
        return cls(root, generation=GenerationSettings(**{k: v for k, v in gen.items() if v is not None}),
                   merge=MergeSettings(**{k: v for k, v in merge.items() if v is not None}),
                   trust_remote_code=tuple(trust_remote_code or ()), **params)

    @classmethod
    def from_record(cls, workspace: Path, settings: dict) -> SweepRequest:
        """The request behind a finished run, from its run.json settings."""
        return cls(Path(workspace), settings["configs"], settings["items"], settings["judge"], settings["keep"],
                   GenerationSettings(**settings["generation"]), MergeSettings(**settings.get("merge", {})),
                   trust_remote_code=tuple(settings.get("trust_remote_code", ())))

    def parameters(self) -> dict:
        """Flat and JSON-able: the flows' parameters."""
        flat = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("generation", "merge")}
        flat.update(workspace=str(self.workspace), trust_remote_code=list(self.trust_remote_code),
                    **{k: getattr(self.generation, k) for k in GENERATION_PARAMETERS},
                    **{flat: getattr(self.merge, field) for flat, field in MERGE_PARAMETERS.items()})
        return flat

    def with_judge(self, judge: str) -> SweepRequest:
        return replace(self, judge=judge)

    @property
    def ws(self) -> Workspace:
        return Workspace(self.workspace)

    def check(self) -> None:
        """Raise ValueError saying what to fix: the settings that need no file read."""
        parse_keep(self.keep)
        backends.check(self.generation)  # e.g. vllm without a GPU
        if self.generation.max_new_tokens < 1 or self.generation.batch_size < 1:
            raise ValueError("--max-new-tokens and --batch-size must be 1 or more")
        if self.generation.served_model:
            try:
                self.generation.served_model.format(name="m", path="/m")
            except (KeyError, IndexError, ValueError) as e:
                raise ValueError(f"served model name {self.generation.served_model!r}: only {{name}} and "
                                 f"{{path}} may be filled in ({e})") from None
            if self.generation.one_served_name():
                raise ValueError(f"--served-model: {one_served_model(self.generation.served_model)}")
        if self.generation.dtype not in ANSWER_DTYPES:
            raise ValueError(f"--dtype must be {', '.join(ANSWER_DTYPES)}, not {self.generation.dtype!r}")
        if self.merge.dtype is not None and self.merge.dtype not in DTYPES:
            raise ValueError(f"merge dtype must be {', '.join(DTYPES)}, not {self.merge.dtype!r}")

    def plan(self) -> SweepPlan:
        """Every input read and checked. A plan handed over by this process's command for an
        equal request (`hand_over`) is taken, once, instead of reading everything again."""
        handed = _HANDED_OVER.pop(self, None)
        if handed is not None:
            return handed
        ws = self.ws
        return plan_sweep(ws, ws.resolve(self.configs), ws.resolve(self.items), ws.resolve(self.judge),
                          self.generation, trust_remote_code=self.trust_remote_code, merge=self.merge)

    def hand_over(self, plan: SweepPlan) -> None:
        """Give `plan` to the flow this command starts next in this process: the CLI planned
        to check the inputs, moments before (0.1–0.3 s a sweep, on the flow's critical path)."""
        _HANDED_OVER.clear()  # one at a time: a plan nobody took is stale by the next command
        _HANDED_OVER[self] = plan

    def settings_record(self, plan: SweepPlan) -> dict:
        """run.json's settings: what a later regrade needs to find the same answers."""
        record = {"configs": self.configs, "items": self.items, "judge": self.judge, "keep": self.keep,
                  # the device as it was ("auto" resolved): the answers are keyed by it, and a
                  # regrade on another machine must find the same answers
                  "generation": asdict(replace(self.generation, device=effective_device(self.generation.device))),
                  "merge": asdict(self.merge),
                  "judge_settings": plan.judge.model_dump(exclude={"template_text", "trust_remote_code", "source"})}
        if self.trust_remote_code:  # recorded only when used: regrade needs it to find the same models
            record["trust_remote_code"] = sorted(self.trust_remote_code)
        return record


_HANDED_OVER: dict[SweepRequest, SweepPlan] = {}  # SweepRequest.hand_over → .plan
