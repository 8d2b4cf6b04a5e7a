"""Write the 200 held-out toy items (items/toy/add/*.txt, items/toy/rev/*.txt).

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


def write_items(items_dir: Path) -> list[Path]:
    """Write (or rewrite identically) the 200 item files; returns their paths."""
    paths = []
    for item in tasks.heldout_items():
        path = Path(items_dir) / item["skill"] / f"{item['id']}.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        text = item_text(item["skill"], item["question"], item["expected"])
        if not path.exists() or path.read_text(encoding="utf-8") != text:
            path.write_text(text, encoding="utf-8")
        paths.append(path)
    return paths
