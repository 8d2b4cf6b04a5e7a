"""report.html in a real headless Chromium: every section renders, answers stay inert text.

The full-page screenshot is kept at tests/artifacts/report.png (gitignored), to look at after
any change to the page.
"""

from __future__ import annotations

import pytest

from tests.browser import browser_page, save_screenshot
from tests.test_report import HOSTILE, demo_run

SECTIONS = {"summary": "Summary", "ranking": "Ranking", "skills": "Models × skills",
            "parents": "Merges vs their best parent", "judge": "What the judge did", "items": "Items",
            "recipes": "Recipes", "run": "Run details"}


@pytest.fixture(scope="module")
def page_of_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("html")
    run_dir = demo_run(tmp)
    with browser_page(tmp, viewport=(1400, 900)) as page:
        requests, errors = [], []
        page.on("request", lambda r: requests.append(r.url))
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("dialog", lambda d: errors.append(f"dialog: {d.message}"))
        page.goto((run_dir / "report.html").as_uri())
        yield page, requests, errors, tmp


def test_every_section_renders(page_of_run):
    page, requests, errors, tmp = page_of_run
    for anchor, title in SECTIONS.items():
        section = page.locator(f"section#{anchor}")
        assert section.is_visible() and section.locator("h2").inner_text() == title
        assert page.locator(f'nav a[href="#{anchor}"]').count() == 1
    assert page.locator("#ranking tr").count() == 1 + 6
    assert page.locator("#ranking svg.bar").count() == 6
    assert page.locator("#skills td.heat").count() == 6 * 4  # overall + 3 skills
    assert page.locator("#parents svg.forest circle").count() == 3  # three merges
    assert "2 of 96 grades unscored" in page.locator("#judge").inner_text()
    assert page.locator("#items details").count() == 16 and page.locator("#recipes details").count() == 3
    assert "merge_method: ties" in page.locator("#recipes details[open] pre").inner_text()
    for text in ("mergeval", "item suite", "judge fingerprint", "pruned"):
        assert text in page.locator("#run").inner_text()
    assert all(url.startswith("file://") for url in requests), requests  # self-contained
    assert not errors, errors
    assert save_screenshot(page, tmp, "report.png").stat().st_size > 20_000


def test_answers_expand_side_by_side_and_stay_text(page_of_run):
    page, _, errors, _ = page_of_run
    item = page.locator("#items details", has_text="arithmetic/arithmetic_00")
    answers = item.locator("pre.answer")
    assert not answers.first.is_visible()
    item.locator("summary").click()
    assert answers.count() == 6 and answers.first.is_visible()
    assert HOSTILE in item.inner_text()  # shown literally ...
    assert page.evaluate("document.scripts.length") == 0  # ... and never run or parsed as markup
    assert page.locator("main img").count() == 0 and "pwned" not in page.title()
    assert "unscored" in page.locator("#items details", has_text="arithmetic/arithmetic_01").text_content()  # closed
    assert not errors, errors
