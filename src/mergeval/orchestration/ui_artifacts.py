"""What the Prefect UI shows about a sweep: progress while it runs, the ranking when it ends.

    artifacts.progress(done, total)     # in the flow, as each model finishes (or fails)
    artifacts.publish(run_dir)          # in the flow, once the run folder is written

Outside a flow run (tests, `stages.run_direct`, a notebook) every function does nothing, and
inside one an artifact that cannot be written is a warning, never a failed sweep: the run
folder on disk is the record, the UI is a view of it.
"""

from __future__ import annotations

import contextvars
import logging
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)
_progress_ids: dict[str, object] = {}  # flow run id → its progress artifact, updated in place
_writer: ThreadPoolExecutor | None = None  # one thread: the updates are sent in order


def _flow_run_id() -> str | None:
    try:
        from prefect.context import FlowRunContext
    except ImportError:
        return None
    ctx = FlowRunContext.get()
    return str(ctx.flow_run.id) if ctx and ctx.flow_run else None


def progress(done: int, total: int) -> None:
    """models done / total, as a progress artifact on the flow run. Sent on a thread of its own,
    in order: the flow's next model does not wait for the server's answer (15 round trips, ≈0.2 s
    of a toy sweep's critical path). `publish` waits for them."""
    global _writer
    run_id = _flow_run_id()
    if run_id is None:
        return
    _writer = _writer or ThreadPoolExecutor(max_workers=1, thread_name_prefix="mergeval-progress")
    context = contextvars.copy_context()  # the flow run's, which Prefect's client calls read
    _writer.submit(context.run, _write_progress, run_id, done, total)


def _write_progress(run_id: str, done: int, total: int) -> None:
    from prefect.artifacts import create_progress_artifact, update_progress_artifact

    percent = 100.0 * done / total if total else 100.0
    text = f"{done} of {total} models done (built, answered and graded, or failed)"
    try:
        if run_id not in _progress_ids:
            _progress_ids[run_id] = create_progress_artifact(percent, key="mergeval-progress", description=text)
        else:
            update_progress_artifact(_progress_ids[run_id], percent, description=text)
    except Exception as e:  # a view of the sweep must never fail the sweep
        log.warning("could not update the progress artifact: %s", e)


def ranking_rows(ranking: pd.DataFrame, comparisons: pd.DataFrame | None = None) -> list[dict]:
    """The ranking as JSON-safe rows (Prefect tables reject NaN), intervals as text."""
    import pandas as pd

    from mergeval.report.markdown import interval, rank_range
    from mergeval.report.rank import best_rows

    best = best_rows(comparisons) if comparisons is not None and not comparisons.empty else pd.DataFrame()
    rows = []
    for r in ranking.to_dict("records"):
        vs = best.loc[r["model"]] if r["model"] in best.index else None
        rows.append({
            "rank": None if pd.isna(r.get("rank")) else int(r["rank"]),
            "model": r["model"],
            "score": None if pd.isna(r.get("score")) else round(float(r["score"]), 3),
            "95 % interval": interval(r.get("ci_low"), r.get("ci_high")),
            "rank range": rank_range(r.get("rank_low"), r.get("rank_high")),
            "vs best parent": "–" if vs is None else f"{vs['diff']:+.3f} ({vs['verdict']})",
            "unscored": 0 if pd.isna(r.get("n_unscored")) else int(r["n_unscored"]),
            "method": "–" if pd.isna(r.get("method")) or not r.get("method") else str(r["method"]),
        })
    return rows


def summary_markdown(run_dir: Path, ranking: pd.DataFrame, comparisons: pd.DataFrame) -> str:
    from mergeval.report.markdown import summary

    n_items = int(ranking["n_scored"].iloc[0] + ranking["n_unscored"].iloc[0]) if len(ranking) else 0
    lines = [f"# mergeval sweep `{run_dir.name}`", ""]
    lines += [f"- {line}" for line in summary(ranking, comparisons, n_items)]
    lines += ["", f"Full report: `{run_dir / 'report.html'}`", "", f"Run folder: `{run_dir}`"]
    return "\n".join(lines)


def views(run_dir: Path) -> tuple[list[dict] | None, str]:
    """The ranking's rows (None: nothing was graded) and the summary's markdown, read from the
    run folder. Called through engine/stage_process.py: pandas is imported there, not in the
    flow's process, which would import it for this alone."""
    import pandas as pd

    ranking = pd.read_csv(run_dir / "ranking.csv")
    comparisons = pd.read_csv(run_dir / "comparisons.csv")
    if "ci_low" not in ranking:  # nothing was graded: there is no ranking to show
        return None, f"# mergeval sweep `{run_dir.name}`\n\nNo model was fully graded; see `{run_dir / 'report.md'}`."
    return ranking_rows(ranking, comparisons), summary_markdown(run_dir, ranking, comparisons)


def publish(run_dir: str | Path) -> None:
    """A table artifact with the ranking and a markdown artifact with the summary."""
    if _flow_run_id() is None:
        return
    from prefect.artifacts import create_markdown_artifact, create_table_artifact

    from mergeval.engine import stage_process

    if _writer:  # the progress bar reaches its end before the ranking appears: behind the updates
        _writer.submit(int).result()

    run_dir = Path(run_dir)
    try:
        rows, summary = stage_process.call(views, run_dir)
        if rows is not None:
            create_table_artifact(rows, key="mergeval-ranking",
                                  description=f"Ranking of {run_dir.name} (95 % bootstrap intervals)")
        create_markdown_artifact(summary, key="mergeval-summary", description=f"Summary of {run_dir.name}")
    except Exception as e:
        log.warning("could not publish the ranking artifacts: %s", e)
