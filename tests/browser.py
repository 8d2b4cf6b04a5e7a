"""A real headless Chromium for browser tests: Debian's `chromium`, driven by Python playwright.

    from tests.browser import browser_page
    with browser_page(tmp_path) as page:
        page.goto("http://127.0.0.1:7860")

`playwright install` cannot download its own browsers here, so the system's Chromium is
launched by path (install it with `apt-get install -y chromium`). A missing browser is a
test failure with the fix in the message, never a silent skip: CI installs it.
"""

from __future__ import annotations

import os
import shutil
from contextlib import contextmanager
from pathlib import Path

import pytest

CHROMIUM = os.environ.get("MERGEVAL_CHROMIUM", "/usr/bin/chromium")
ARGS = [
    "--headless",
    "--no-sandbox",  # tests run as root in CI, where Chromium's sandbox refuses to start
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    # Offline and quiet: no update checks, component downloads or sync calls from the browser.
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def chromium_path() -> str:
    path = shutil.which(CHROMIUM) or (CHROMIUM if Path(CHROMIUM).is_file() else None)
    if path is None:
        pytest.fail(f"Chromium not found at {CHROMIUM}: install it (apt-get update && apt-get install -y "
                    "chromium) or set MERGEVAL_CHROMIUM to its path", pytrace=False)
    try:
        import playwright  # noqa: F401
    except ImportError:
        pytest.fail("Python playwright is not installed: pip install -e '.[test]'", pytrace=False)
    return path


@contextmanager
def browser_page(tmp_path: Path, *, viewport=(1280, 1400), timeout_ms: int = 30_000):
    """A fresh persistent context (its own user-data dir under tmp_path) and one page in it."""
    from playwright.sync_api import sync_playwright

    executable = chromium_path()
    with sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"), executable_path=executable, headless=True, args=ARGS,
            viewport={"width": viewport[0], "height": viewport[1]},
        )
        try:
            page = context.pages[0] if context.pages else context.new_page()
            page.set_default_timeout(timeout_ms)
            yield page
        finally:
            context.close()


def save_screenshot(page, tmp_path: Path, name: str) -> Path:
    """Into the test's own folder, and a copy into tests/artifacts/ (gitignored) to look at."""
    shot = tmp_path / name
    page.screenshot(path=str(shot), full_page=True)
    artifacts = Path(__file__).resolve().parent / "artifacts"
    artifacts.mkdir(exist_ok=True)
    shutil.copy(shot, artifacts / name)
    return shot
