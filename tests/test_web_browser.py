"""The web chat page, driven in a real (headless) Chromium against the live API, Redis and worker.

Uses Debian's Chromium (``apt-get install chromium``); Playwright's own browser downloads are never used.
Takes a desktop screenshot; with ``IMAGINEBOT_UPDATE_SCREENSHOT=1`` it replaces the README's
``docs/web-chat.png`` (otherwise it goes to the test's temp folder, so a test run leaves the tree clean).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from core.job_client import QueueClient
from tests.helpers.browser import CHROMIUM, CHROMIUM_ARGS

README_SCREENSHOT = Path(__file__).resolve().parents[1] / "docs" / "web-chat.png"
#: Two steps keep the test fast; the README's screenshot is drawn with the default 20.
UPDATE_SCREENSHOT = os.environ.get("IMAGINEBOT_UPDATE_SCREENSHOT") == "1"
STEPS = 20 if UPDATE_SCREENSHOT else 2
PROMPT = f"a large red circle in the center --seed 7 --steps {STEPS}"
# The worker loads both engines on its first job: about a minute on a small CPU.
FIRST_JOB_TIMEOUT_MS = 240_000
UI_TIMEOUT_MS = 15_000

pytestmark = [
    # Skipped on a developer machine without Chromium; in CI (.ci/run installs it) a missing
    # browser must fail, not skip.
    pytest.mark.skipif(
        not CHROMIUM.exists() and not os.environ.get("CI"),
        reason="needs Debian's Chromium at /usr/bin/chromium (apt install chromium)",
    ),
    pytest.mark.timeout(600),
]

# Records every status text and data-status a job bubble shows, so the test can tell that the
# "Queued — position N" state was rendered even when the worker is quick.
RECORD_STATES = """
window.__seen = [];
new MutationObserver(() => {
  for (const job of document.querySelectorAll('.job[data-job-id]')) {
    const status = job.querySelector('.status');
    const entry = job.dataset.status + '|' + (status ? status.textContent : '');
    if (window.__seen[window.__seen.length - 1] !== entry) window.__seen.push(entry);
  }
}).observe(document, {subtree: true, childList: true, attributes: true, characterData: true});
"""

IMG_LOADED = "img => img.complete && img.naturalWidth > 0"


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    playwright_sync = pytest.importorskip("playwright.sync_api")
    with playwright_sync.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield browser
        browser.close()


def test_web_chat_in_a_browser(web_server: str, settings, browser, tmp_path: Path) -> None:  # noqa: ANN001
    """One visit, step by step: send a prompt and watch it go to done, links and lightbox, reload,
    bad inputs (with the README's screenshot), cancel, then the same conversation on a phone."""
    page_errors: list[str] = []
    context = browser.new_context(viewport={"width": 1280, "height": 1000})
    page = context.new_page()
    page.on("pageerror", lambda exc: page_errors.append(str(exc)))
    page.add_init_script(RECORD_STATES)
    page.goto(web_server + "/")
    cid = _page_is_ready(page)
    job_id, api_job = _send_a_prompt_and_see_it_done(page, web_server)
    _caption_links_and_lightbox(page, web_server, job_id, api_job)
    _reload_shows_the_conversation(page, job_id, cid)
    _bad_inputs_get_their_messages(page, tmp_path)
    _a_pending_job_can_be_cancelled(page, job_id)
    assert not page_errors, page_errors
    context.close()
    # A notice in the history (a training run's, which carries no error code) is not shown as an error.
    notice = "Retraining DF-GAN on shapes (1 epochs) queued as run 0123456789abcdef"
    QueueClient(settings).history.append("web", cid, {"role": "bot", "text": notice, "run_id": "0" * 16})
    _the_conversation_fits_a_phone(browser, web_server, cid, job_id, notice, tmp_path)


def _page_is_ready(page) -> str:  # noqa: ANN001 - a Playwright page
    """The chat box, send button and flag hints are there; returns the conversation id it made."""
    from playwright.sync_api import expect

    expect(page.locator("#prompt")).to_be_visible()
    expect(page.locator("#send")).to_be_visible()
    expect(page.locator(".hint")).to_contain_text("--seed N")
    cid = page.evaluate("localStorage.getItem('imaginebot.conversation')")
    assert cid and re.fullmatch(r"[A-Za-z0-9_-]{8,64}", cid), cid
    return cid


def _send_a_prompt_and_see_it_done(page, web_server: str) -> tuple[str, dict]:  # noqa: ANN001
    """The user's message, then a job bubble that goes queued -> ... -> done with the image."""
    from playwright.sync_api import expect

    prompt, messages = page.locator("#prompt"), page.locator("#messages")
    prompt.fill(PROMPT)
    page.click("#send")
    expect(messages.locator(".message.user").first).to_have_text(PROMPT)
    job = messages.locator(".job[data-job-id]").first
    expect(job).to_be_visible(timeout=UI_TIMEOUT_MS)
    job_id = job.get_attribute("data-job-id")
    assert job_id and re.fullmatch(r"[0-9a-f]{16}", job_id)
    expect(prompt).to_have_value("")

    image = job.locator("img.pair")
    expect(image).to_be_visible(timeout=FIRST_JOB_TIMEOUT_MS)
    page.wait_for_function(IMG_LOADED, arg=image.element_handle(), timeout=UI_TIMEOUT_MS)
    expect(job).to_have_attribute("data-status", "done")
    seen = page.evaluate("window.__seen")
    # The API answers "queued" with the place in the queue (gone if the worker took the job that instant).
    assert re.fullmatch(
        r"queued\|Queued — (position \d+( of \d+(, about \d+ (s|min))?)?|starting soon)", seen[0]
    ), seen
    assert seen[-1] == "done|Done", seen

    api_job = requests.get(f"{web_server}/api/jobs/{job_id}", timeout=10).json()["job"]
    assert api_job["status"] == "done" and api_job["delivered"], api_job
    assert api_job["seed"] == 7 and api_job["steps"] == STEPS

    return job_id, api_job


def _caption_links_and_lightbox(page, web_server: str, job_id: str, api_job: dict) -> None:  # noqa: ANN001
    """Caption (seed, each engine's version and time), a full-size link per engine image, and a
    lightbox that Escape closes."""
    from playwright.sync_api import expect

    job = page.locator(f'.job[data-job-id="{job_id}"]')
    image = job.locator("img.pair")
    caption = job.locator(".caption")
    expect(caption).to_contain_text("seed 7")
    for result in api_job["images"]:
        expect(caption).to_contain_text(result["version"])
    engine_links = job.locator(".links a.engine-link")
    expect(engine_links).to_have_count(sum(len(r["urls"]) for r in api_job["images"]))
    for i in range(engine_links.count()):
        href = engine_links.nth(i).get_attribute("href")
        assert href
        png = page.request.get(web_server + href)
        assert png.ok and png.headers["content-type"] == "image/png"
        assert engine_links.nth(i).get_attribute("target") == "_blank"
    assert job.locator("a.pair-link").get_attribute("href") == api_job["image_url"]

    # Clicking the image opens it full size in a lightbox; Escape closes it.
    image.click()
    lightbox = page.locator("#lightbox")
    expect(lightbox).to_have_attribute("open", "")
    page.wait_for_function(IMG_LOADED, arg=page.locator("#lightbox-img").element_handle())
    page.keyboard.press("Escape")
    expect(lightbox).not_to_have_attribute("open", "")


def _reload_shows_the_conversation(page, job_id: str, cid: str) -> None:  # noqa: ANN001
    """A reload shows the same conversation from the server's history."""
    from playwright.sync_api import expect

    messages = page.locator("#messages")
    page.reload()
    expect(messages.locator(".message.user").first).to_have_text(PROMPT, timeout=UI_TIMEOUT_MS)
    job = messages.locator(f'.job[data-job-id="{job_id}"]')
    expect(job).to_have_attribute("data-status", "done", timeout=UI_TIMEOUT_MS)
    image = job.locator("img.pair")
    expect(image).to_be_visible(timeout=UI_TIMEOUT_MS)
    page.wait_for_function(IMG_LOADED, arg=image.element_handle(), timeout=UI_TIMEOUT_MS)
    assert page.evaluate("localStorage.getItem('imaginebot.conversation')") == cid


def _bad_inputs_get_their_messages(page, tmp_path: Path) -> None:  # noqa: ANN001
    """Whitespace only, sent with Enter, gets the server's message in an error bubble (then the
    screenshot); text is shown as text, never as markup, and a bad flag gets its own message."""
    from playwright.sync_api import expect

    prompt, messages = page.locator("#prompt"), page.locator("#messages")
    prompt.fill("   ")
    prompt.press("Enter")
    empty_error = messages.locator(".message.error", has_text="Your prompt is empty")
    expect(empty_error).to_be_visible(timeout=UI_TIMEOUT_MS)
    expect(empty_error).to_contain_text("Describe a picture")

    page.wait_for_timeout(400)  # let the entry animations settle before the picture
    screenshot = README_SCREENSHOT if UPDATE_SCREENSHOT else tmp_path / "web-chat.png"
    page.screenshot(path=str(screenshot))
    assert screenshot.stat().st_size > 10_000

    prompt.fill("<b id=injected>bold</b> --bogus 1")
    page.click("#send")
    expect(messages.locator(".message.error", has_text="Unknown option --bogus")).to_be_visible(
        timeout=UI_TIMEOUT_MS
    )
    expect(messages.locator(".message.user").last).to_have_text("<b id=injected>bold</b> --bogus 1")
    assert page.locator("#injected").count() == 0


def _a_pending_job_can_be_cancelled(page, job_id: str) -> None:  # noqa: ANN001
    """A pending job has a Cancel button; cancelling shows in its bubble."""
    from playwright.sync_api import expect

    prompt, messages = page.locator("#prompt"), page.locator("#messages")
    prompt.fill("a slow blue square --seed 3 --steps 60 --n 2")
    page.click("#send")
    slow = messages.locator(".job[data-job-id]").last
    expect(slow).not_to_have_attribute("data-job-id", job_id, timeout=UI_TIMEOUT_MS)
    slow.locator("button.cancel").click()
    expect(slow).to_have_attribute("data-status", "cancelled", timeout=UI_TIMEOUT_MS)
    expect(slow.locator(".status")).to_have_text("Cancelled")
    expect(slow.locator("button.cancel")).to_be_hidden()
    expect(slow.locator("img.pair")).to_have_count(0)


def _the_conversation_fits_a_phone(
    browser, web_server: str, cid: str, job_id: str, notice: str, tmp_path: Path
) -> None:  # noqa: ANN001
    """A phone: the same conversation fits 390 px without sideways scrolling."""
    from playwright.sync_api import expect

    page_errors: list[str] = []
    phone = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True)
    phone.add_init_script(f"localStorage.setItem('imaginebot.conversation', {json.dumps(cid)})")
    page = phone.new_page()
    page.on("pageerror", lambda exc: page_errors.append(str(exc)))
    page.goto(web_server + "/")
    image = page.locator(f'.job[data-job-id="{job_id}"] img.pair')
    expect(image).to_be_visible(timeout=UI_TIMEOUT_MS)
    page.wait_for_function(IMG_LOADED, arg=image.element_handle(), timeout=UI_TIMEOUT_MS)
    expect(page.locator(".message.error", has_text="Your prompt is empty")).to_be_visible()
    expect(page.locator(".message.bot", has_text=notice)).to_be_visible()
    expect(page.locator(".message.error", has_text=notice)).to_have_count(0)
    scroll_width = page.evaluate("document.scrollingElement.scrollWidth")
    assert scroll_width <= 390 + 1, f"horizontal scroll on a phone: scrollWidth {scroll_width}"
    for hook in ("#prompt", "#send", "img.pair"):
        box = page.locator(hook).first.bounding_box()
        assert box and box["x"] >= 0 and box["x"] + box["width"] <= 390 + 1, (hook, box)
    page.screenshot(path=str(tmp_path / "web-chat-phone.png"))
    assert not page_errors, page_errors
    phone.close()


def _green_png(side: int = 96) -> bytes:
    import io

    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", (side, side), (30, 200, 40)).save(out, format="PNG")
    return out.getvalue()


# A DataTransfer holding one PNG (base64), as a file dragged from the desktop brings.
DRAGGED_FILE = """(b64) => {
  const dt = new DataTransfer();
  const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
  dt.items.add(new File([bytes], "dropped.png", { type: "image/png" }));
  return dt;
}"""


SPOILER_NOTICE = "1 picture behind a spoiler: the safety checker flagged it."


def _as_if_flagged(route) -> None:  # noqa: ANN001 - a Playwright route
    response = route.fetch()
    body = response.json()
    for message in body["messages"]:
        if message.get("role") == "job" and message["job"]["image_input"]:
            spoiler = {"index": 0, "action": "spoiler", "reason": "the safety checker flagged it"}
            for result in message["job"]["images"]:
                result["nsfw"] = [spoiler] if result["engine"] == "diffusion" else []
            message["job"]["nsfw_notice"] = SPOILER_NOTICE
    route.fulfill(response=response, json=body)


def test_a_picture_uploaded_in_the_browser_is_drawn_from(web_server: str, browser) -> None:  # noqa: ANN001
    import base64
    import io

    import numpy as np
    from PIL import Image
    from playwright.sync_api import expect

    page_errors: list[str] = []
    context = browser.new_context(viewport={"width": 1280, "height": 1000})
    page = context.new_page()
    page.on("pageerror", lambda exc: page_errors.append(str(exc)))
    page.goto(web_server + "/")
    messages, attachment = page.locator("#messages"), page.locator("#attachment")
    expect(page.locator("#attach")).to_be_visible()
    expect(attachment).to_be_hidden()

    # Drag and drop: the drop zone shows while a file is dragged over the page; the drop attaches it.
    dragged = page.evaluate_handle(DRAGGED_FILE, base64.b64encode(_green_png()).decode())
    page.dispatch_event("body", "dragenter", {"dataTransfer": dragged})
    expect(page.locator("#drop-zone")).to_be_visible()
    page.dispatch_event("body", "drop", {"dataTransfer": dragged})
    expect(page.locator("#drop-zone")).to_be_hidden()
    expect(attachment).to_be_visible()
    expect(page.locator("#attachment-name")).to_have_text("dropped.png")
    page.click("#attachment-remove")
    expect(attachment).to_be_hidden()

    # The button's file chooser: a file that is not a picture gets the server's specific answer.
    text_file = {"name": "notes.txt", "mimeType": "text/plain", "buffer": b"hello"}
    page.set_input_files("#image", files=[text_file])
    expect(attachment).to_be_visible()
    page.fill("#prompt", "a bird")
    page.click("#send")
    expect(messages.locator(".message.error", has_text="not an image I can read")).to_be_visible(
        timeout=UI_TIMEOUT_MS
    )
    expect(attachment).to_be_hidden()

    # A real picture: the user's bubble shows it; the job is drawn from it (DF-GAN labelled text only).
    green_file = {"name": "green.png", "mimeType": "image/png", "buffer": _green_png()}
    page.set_input_files("#image", files=[green_file])
    page.fill("#prompt", "a bird --seed 3 --steps 4 --strength 0.5")
    page.click("#send")
    expect(messages.locator(".message.user img.sent-picture")).to_have_count(1)
    job = messages.locator(".job[data-job-id]").last
    expect(job).to_have_attribute("data-status", "done", timeout=FIRST_JOB_TIMEOUT_MS)
    expect(job.locator(".job-prompt")).to_contain_text("from your picture, strength 0.5")
    expect(job.locator(".chip.engine", has_text="DF-GAN").locator(".text-only")).to_have_text("text only")
    expect(job.locator(".chip.engine", has_text="Diffusion").locator(".text-only")).to_have_count(0)
    job_url = f"{web_server}/api/jobs/{job.get_attribute('data-job-id')}"
    api_job = requests.get(job_url, timeout=10).json()["job"]
    assert api_job["image_input"] is True, api_job
    diffusion = next(r for r in api_job["images"] if r["engine"] == "diffusion")
    drawn = Image.open(io.BytesIO(requests.get(web_server + diffusion["urls"][0], timeout=10).content))
    red, green, blue = np.asarray(drawn.convert("RGB"), dtype=np.float32).reshape(-1, 3).mean(axis=0)
    assert green > red + 60 and green > blue + 60, (red, green, blue)  # text alone draws it reddish

    # After a reload the history says the prompt came with a picture. (The history is answered as if
    # the safety checker had flagged the diffusion picture in a channel that shows it behind a spoiler.)
    page.route("**/api/conversations/*", _as_if_flagged)
    page.reload()
    expect(messages.locator(".message.user .sent-picture-chip")).to_have_count(2, timeout=UI_TIMEOUT_MS)
    flagged = messages.locator(".job[data-job-id]").last
    expect(flagged.locator(".nsfw-note")).to_have_text(SPOILER_NOTICE)
    expect(flagged.locator(".pair-link.spoiler .spoiler-label")).to_be_visible()
    flagged.locator(".pair-link").click()  # the first click shows it, no lightbox yet
    expect(flagged.locator(".pair-link.spoiler")).to_have_count(0)
    expect(page.locator("#lightbox")).not_to_have_attribute("open", "")
    assert not page_errors, page_errors
    context.close()
