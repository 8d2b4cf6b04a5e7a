"""Write the 200 held-out toy items (items/toy/add/*.txt, items/toy/rev/*.txt) and the suite's
settings (items/toy/suite.yaml: a toy answer is a few tokens, so the suite asks for 64 at most).

The items depend only on tasks.SPLIT_SEED, never on a model seed, so the committed files
never change. Criteria are whitespace-separated words the judge's tokenizer knows.
"""

from __future__ import annotations

import json
from pathlib import Path

from mergeval.zoo import toy_tasks as tasks


def criterion(expected: str) -> str:
    return (f"The answer must be exactly {expected} . "
            f"Score 5 if the answer is exactly {expected} and nothing else , 1 otherwise .")


def item_text(skill: str, question: str, expected: str) -> str:
    return (
        "---\n"
        f"skill: {skill}\n"
        "checks:\n"
        f"  - equals: {json.dumps(expected)}\n"
        "---\n"
        "Question:\n"
        f"{question}\n"
        "\n"
        "Criterion:\n"
        f"{criterion(expected)}\n"
    )


TOY_MAX_NEW_TOKENS = 64  # a toy answer is a number or a few letters; the sweep's default is 512
SUITE_TEXT = (
    "# The toy suite's own settings (see mergeval/inputs/suite_settings.py); written by `mergeval zoo`.\n"
    "# Longest answer, in tokens: a toy answer is a handful of words.\n"
    f"max_new_tokens: {TOY_MAX_NEW_TOKENS}\n"
)


def write_items(items_dir: Path) -> list[Path]:
    """Write (or rewrite identically) the 200 item files and suite.yaml; returns the items' paths."""
    suite = Path(items_dir) / "suite.yaml"
    suite.parent.mkdir(parents=True, exist_ok=True)
    if not suite.exists() or suite.read_text(encoding="utf-8") != SUITE_TEXT:
        suite.write_text(SUITE_TEXT, encoding="utf-8")
    paths = []
    for item in tasks.heldout_items():
        path = Path(items_dir) / item["skill"] / f"{item['id']}.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        text = item_text(item["skill"], item["question"], item["expected"])
        if not path.exists() or path.read_text(encoding="utf-8") != text:
            path.write_text(text, encoding="utf-8")
        paths.append(path)
    return paths
