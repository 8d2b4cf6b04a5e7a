"""The user's workspace: the folder that holds merge_configs/, items/, judge/ and reports/.

Every relative path a user writes (a source model in a recipe, an item folder) resolves
against the workspace root, so a clone works from anywhere.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Workspace:
    root: Path

    @classmethod
    def find(cls, start: Path | None = None) -> "Workspace":
        """MERGEVAL_WORKSPACE if set, else the nearest folder upward holding merge_configs/."""
        env = os.environ.get("MERGEVAL_WORKSPACE")
        if env:
            return cls(Path(env).resolve())
        here = (start or Path.cwd()).resolve()
        for folder in (here, *here.parents):
            if (folder / "merge_configs").is_dir():
                return cls(folder)
        return cls(here)

    def resolve(self, path: str | Path) -> Path:
        """A user-written path: `~` expanded, relative paths taken from the workspace root."""
        p = Path(os.path.expanduser(str(path)))
        return p if p.is_absolute() else self.root / p

    @property
    def configs(self) -> Path:
        return self.root / "merge_configs"

    @property
    def items(self) -> Path:
        return self.root / "items"

    @property
    def judge_dir(self) -> Path:
        return self.root / "judge"

    @property
    def judge_file(self) -> Path:
        return self.judge_dir / "proctora.yaml"

    @property
    def toy_judge_file(self) -> Path:
        """The toy Proctora's settings (the zoo trains it on toy/prompt.txt): the toy suite's judge."""
        return self.judge_dir / "toy" / "proctora.yaml"

    @property
    def reports(self) -> Path:
        return self.root / "reports"

    @property
    def zoo(self) -> Path:
        return self.root / "zoo"

    @property
    def state(self) -> Path:
        """Content-addressed stage outputs and caches (gitignored)."""
        return self.root / ".mergeval"

    @property
    def judge_cache(self) -> Path:
        """Every judge call, by the hash of its full request: shared by sweeps, regrade,
        calibrate and the rubric app, so the same request is never asked twice."""
        return self.state / "judge-cache"
