"""Debian's Chromium, as every browser test launches it (never `playwright install`)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]


def needs_chromium():  # noqa: ANN201 - a pytest mark
    """Skip on a developer machine without Chromium; in CI (.ci/run installs it) a missing browser
    must fail, not skip."""
    import os

    import pytest

    return pytest.mark.skipif(
        not CHROMIUM.exists() and not os.environ.get("CI"),
        reason="needs Debian's Chromium at /usr/bin/chromium (apt install chromium)",
    )


@contextmanager
def chromium() -> Iterator[Any]:
    """Debian's Chromium launched headless through Playwright (skips when Playwright is missing)."""
    import pytest

    playwright_sync = pytest.importorskip("playwright.sync_api")
    with playwright_sync.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()
