"""Results in the web chat page, in a real (headless) Chromium against the live web server, Redis
(database 19, emptied) and a real Celery worker: a ``--n 4`` grid with U1–U4 / V1–V4 / 🔄 / Info /
✏️ Remix, U2 posting one picture, Info, a remix from the edit box, ``/show``, the push (Server-Sent
Events) and the polling fallback, ``--ar 16:9`` and a live preview before the result.

With ``IMAGINEBOT_UPDATE_SCREENSHOT=1`` the grid's screenshot replaces ``docs/images/web-grid.png``
(the README's); otherwise it goes to the test's temp folder.
"""

from __future__ import annotations

import io
import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from PIL import Image

from core.png_metadata import read_parameters
from core.settings import Settings
from tests.helpers.browser import chromium, needs_chromium

README_SCREENSHOT = Path(__file__).resolve().parents[1] / "docs" / "images" / "web-grid.png"
UPDATE_SCREENSHOT = os.environ.get("IMAGINEBOT_UPDATE_SCREENSHOT") == "1"
# The worker loads the engines on its first job: about a minute on a small CPU.
FIRST_JOB_TIMEOUT_MS = 240_000
JOB_TIMEOUT_MS = 120_000
UI_TIMEOUT_MS = 15_000
IMG_LOADED = "img => img.complete && img.naturalWidth > 0"

pytestmark = [needs_chromium(), pytest.mark.timeout(900)]

# Records, in order, when a job bubble first shows a preview and when it first shows its result.
RECORD_ORDER = """
window.__order = [];
new MutationObserver(() => {
  for (const job of document.querySelectorAll('.job[data-job-id]')) {
    for (const [what, sel] of [['preview', '.job-preview img.preview'], ['result', '.job-result img.pair']]) {
      const tag = job.dataset.jobId + ':' + what;
      if (job.querySelector(sel) && !window.__order.includes(tag)) window.__order.push(tag);
    }
  }
}).observe(document, {subtree: true, childList: true, attributes: true});
"""


@pytest.fixture(scope="module")
def served(settings: Settings, celery_worker: object) -> Iterator[tuple[str, Settings]]:
    """The web chat with the session's real worker (one in-thread Celery worker per process: Celery's
    stop flag is global, so stopping a second one would stop the session's too)."""
    from bots.web.server import WebServer

    server = WebServer(settings, host="127.0.0.1", port=0).start()
    yield server.url, settings
    server.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    with chromium() as launched:
        yield launched


def _page(browser, url: str, query: str = ""):  # noqa: ANN001, ANN202 - Playwright objects
    """A fresh conversation's page; ``page.__requests`` collects the URLs it asks for."""
    context = browser.new_context(viewport={"width": 1100, "height": 1300})
    page = context.new_page()
    page.add_init_script(RECORD_ORDER)
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    asked: list[str] = []
    page.on("request", lambda r: asked.append(r.url))
    page.goto(url + "/" + query)
    page.errors, page.asked = errors, asked  # type: ignore[attr-defined]
    return page


def _send(page, text: str, timeout_ms: int = JOB_TIMEOUT_MS):  # noqa: ANN001, ANN202
    """Send ``text``; returns the job bubble once its picture is loaded."""
    from playwright.sync_api import expect

    before = page.locator(".job[data-job-id]").count()
    page.fill("#prompt", text)
    page.click("#send")
    job = page.locator(".job[data-job-id]").nth(before)
    image = job.locator(".job-result img.pair")
    expect(image).to_be_visible(timeout=timeout_ms)
    page.wait_for_function(IMG_LOADED, arg=image.element_handle(), timeout=UI_TIMEOUT_MS)
    return job


def _labels(container) -> list[list[str]]:  # noqa: ANN001
    rows = container.locator(".result-buttons").first.locator(".button-row")
    return [rows.nth(i).locator("button").all_inner_texts() for i in range(rows.count())]


def test_a_grid_with_its_buttons(served: tuple[str, Settings], browser, tmp_path: Path) -> None:  # noqa: ANN001
    """``--n 4``: the paired image (a 2×2 grid per engine) with U1–U4 / V1–V4 / 🔄 / Info / Remix; U2
    posts picture 2 of each engine, nothing else;
    Info answers; the remix box queues the edited prompt; ``/show`` brings the buttons back."""
    from playwright.sync_api import expect

    url, _ = served
    page = _page(browser, url)
    job = _send(page, "a red circle --n 4 --engine dfgan,diffusion --seed 5", FIRST_JOB_TIMEOUT_MS)
    job_id = job.get_attribute("data-job-id")
    assert _labels(job) == [["U1", "U2", "U3", "U4"], ["V1", "V2", "V3", "V4"], ["🔄", "ℹ️ Info", "✏️ Remix"]]
    # The result came by push: the page listened to the conversation's events.
    assert any(re.search(r"/api/conversations/[^/]+/events\?since=\d+$", u) for u in page.asked)
    page.wait_for_timeout(300)
    screenshot = README_SCREENSHOT if UPDATE_SCREENSHOT else tmp_path / "web-grid.png"
    screenshot.parent.mkdir(parents=True, exist_ok=True)
    page.locator("#messages").screenshot(path=str(screenshot))  # the prompt and its result
    assert screenshot.stat().st_size > 10_000

    # U2: the second picture of each engine, full size, with the buttons under a picked picture.
    job.get_by_role("button", name="U2", exact=True).click()
    picked = page.locator(".message.picked").last
    expect(picked).to_contain_text("Picture 2 of job", timeout=UI_TIMEOUT_MS)
    pictures = picked.locator("img.picked-picture")
    expect(pictures).to_have_count(2)
    for i, engine in enumerate(("dfgan", "diffusion")):
        picture = pictures.nth(i)
        assert picture.get_attribute("src") == f"/api/jobs/{job_id}/images/{engine}-1.png"
        page.wait_for_function(IMG_LOADED, arg=picture.element_handle(), timeout=UI_TIMEOUT_MS)
        png = requests.get(url + f"/api/jobs/{job_id}/images/{engine}-1.png", timeout=5).content
        size = picture.evaluate("img => [img.naturalWidth, img.naturalHeight]")
        assert size == list(Image.open(io.BytesIO(png)).size)
    assert _labels(picked) == [["Upscale ×2 DF-GAN", "Upscale ×2 Diffusion", "Vary", "✏️ Remix"]]

    # Info: the job's settings in words.
    job.get_by_role("button", name="ℹ️ Info").click()
    expect(page.locator(".message.bot").last).to_contain_text("seed 5", timeout=UI_TIMEOUT_MS)

    # ✏️ Remix: an edit box prefilled with the prompt; the edited prompt becomes a new job.
    job.get_by_role("button", name="✏️ Remix").click()
    box = job.locator(".remix-box input")
    expect(box).to_have_value("a red circle", timeout=UI_TIMEOUT_MS)
    box.fill("a blue circle")
    box.press("Enter")
    remixed = page.locator(".job[data-job-id]").last
    expect(remixed).not_to_have_attribute("data-job-id", job_id or "", timeout=UI_TIMEOUT_MS)
    expect(remixed.locator(".job-result img.pair")).to_be_visible(timeout=JOB_TIMEOUT_MS)
    remix_id = remixed.get_attribute("data-job-id")
    remix = requests.get(f"{url}/api/jobs/{remix_id}", timeout=5).json()["job"]
    assert remix["prompt"] == "a blue circle" and remix["count"] == 4

    # /show typed in the chat with the id shown under the first result: it again, with its buttons.
    assert job.locator(".chip.job").inner_text() == f"job {job_id}"
    page.fill("#prompt", f"/show {job_id}")
    page.click("#send")
    shown = page.locator(f'.shown[data-shown-job="{job_id}"]')
    expect(shown.locator("img.pair")).to_be_visible(timeout=UI_TIMEOUT_MS)
    assert _labels(shown)[0] == ["U1", "U2", "U3", "U4"]
    assert not page.errors, page.errors  # type: ignore[attr-defined]
    page.context.close()


def test_polling_still_works_without_push(served: tuple[str, Settings], browser) -> None:  # noqa: ANN001
    """``?push=off``: no event stream, the page polls the job and shows the result all the same."""
    url, _ = served
    page = _page(browser, url, "?push=off")
    job = _send(page, "a green square --engine dfgan --seed 2")
    assert _labels(job) == [["V1"], ["🔄", "ℹ️ Info", "✏️ Remix"]]  # one picture: no U buttons
    assert not any("/events" in u for u in page.asked)  # type: ignore[attr-defined]
    assert any(f"/api/jobs/{job.get_attribute('data-job-id')}" in u for u in page.asked)  # type: ignore[attr-defined]
    page.context.close()


def test_16_9_comes_back_16_9(served: tuple[str, Settings], browser) -> None:  # noqa: ANN001
    """``--ar 16:9``: the diffusion picture is 16:9."""
    url, _ = served
    page = _page(browser, url)
    job = _send(page, "a yellow sun --ar 16:9 --engine diffusion --steps 2 --seed 1", FIRST_JOB_TIMEOUT_MS)
    link = job.locator("a.engine-link[data-engine='diffusion']").first
    png = requests.get(url + str(link.get_attribute("href")), timeout=10).content
    width, height = Image.open(io.BytesIO(png)).size
    # About 64² pixels in 16:9, each side a multiple of 8 (core/aspect.py): 88×48, shown as such.
    assert width > height and abs(width / height - 16 / 9) < 8 / height, (width, height)
    api_job = requests.get(f"{url}/api/jobs/{job.get_attribute('data-job-id')}", timeout=5).json()["job"]
    assert (api_job["aspect"], api_job["width"], api_job["height"]) == ("16:9", width, height)
    assert f"ar 16:9, {width}×{height} px" in job.locator(".job-prompt").inner_text()
    # The picture the page links to says how it was drawn (the ``parameters`` chunk).
    said = read_parameters(png)
    assert said["prompt"] == "a yellow sun" and said["Seed"] == "1" and said["Steps"] == "2", said
    assert said["Size"] == f"{width}x{height}" and said["Engine"] == "diffusion", said
    page.context.close()


def test_a_preview_appears_before_the_result(served: tuple[str, Settings], browser) -> None:  # noqa: ANN001
    """A diffusion job long enough to show previews: the pending bubble shows one before the result."""
    url, _ = served
    page = _page(browser, url)
    job = _send(page, "a purple triangle --engine diffusion --steps 40 --seed 3", FIRST_JOB_TIMEOUT_MS)
    job_id = job.get_attribute("data-job-id")
    order = page.evaluate("window.__order")
    assert order.index(f"{job_id}:preview") < order.index(f"{job_id}:result"), order
    page.context.close()
