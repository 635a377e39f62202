"""``/dataset`` in the web chat page, in a real (headless) Chromium against the live web server and
Redis (database 14, emptied; no worker: nothing is drawn): an admin attaches a picture with
``/dataset add``, and ``/dataset show`` shows the contact sheet inline.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

from core.datasets import DatasetStore
from core.embedded_redis import EmbeddedRedis
from core.settings import Settings
from tests.helpers.browser import CHROMIUM, CHROMIUM_ARGS
from tests.helpers.databases import emptied_database
from tests.helpers.settings import make_settings

ADMIN = "web-dataset-admin-1"
UI_TIMEOUT_MS = 15_000

pytestmark = [
    pytest.mark.skipif(
        not CHROMIUM.exists() and not os.environ.get("CI"),
        reason="needs Debian's Chromium at /usr/bin/chromium (apt install chromium)",
    ),
    pytest.mark.timeout(300),
]


@pytest.fixture
def served(redis_server: EmbeddedRedis, tmp_path: Path) -> Iterator[tuple[str, Settings]]:
    from bots.web.server import WebServer

    settings = make_settings(emptied_database(redis_server, 14), tmp_path / "data", admin_ids=f"web:{ADMIN}")
    server = WebServer(settings, host="127.0.0.1", port=0).start()
    yield server.url, settings
    server.stop()


def _png(colour: tuple[int, int, int]) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (120, 90), colour).save(out, format="PNG")
    return out.getvalue()


def test_an_admin_builds_a_dataset_in_the_web_page(served: tuple[str, Settings]) -> None:
    playwright_sync = pytest.importorskip("playwright.sync_api")
    from playwright.sync_api import expect

    url, settings = served
    with playwright_sync.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        page = browser.new_page()
        page.add_init_script(f"localStorage.setItem('imaginebot.conversation', '{ADMIN}');")
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.goto(url + "/")
        messages = page.locator("#messages")
        for colour, caption in (((220, 30, 30), "a red card"), ((30, 30, 220), "a blue card")):
            page.set_input_files(
                "#image", files=[{"name": "card.png", "mimeType": "image/png", "buffer": _png(colour)}]
            )
            page.fill("#prompt", f"/dataset add cards {caption}")
            page.click("#send")
            expect(
                messages.locator(".message.bot", has_text=f"“{caption}” to dataset 'cards'")
            ).to_be_visible(timeout=UI_TIMEOUT_MS)
        page.fill("#prompt", "/dataset show cards")
        page.click("#send")
        shown = messages.locator(".message.bot", has_text="Dataset 'cards': 2 pictures.")
        expect(shown).to_be_visible(timeout=UI_TIMEOUT_MS)
        sheet = shown.locator("img[alt='contact sheet']")
        expect(sheet).to_have_count(1)
        assert sheet.evaluate("img => img.complete && img.naturalWidth") == 4 + 2 * 100
        assert not errors, errors
        browser.close()
    assert [i.caption for i in DatasetStore(settings.data_dir).items("cards")] == [
        "a red card",
        "a blue card",
    ]
