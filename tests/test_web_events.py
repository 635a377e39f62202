"""The web chat's push: ``GET /api/conversations/<id>/events`` (Server-Sent Events) through waitress
against a real Redis (database 19, emptied; no Celery worker consumes there, so the test plays the
worker with the worker's own code: the claim, the progress callback of ``worker/generate.py``, the
done write and the web delivery of ``bots/web/send.py``)."""

from __future__ import annotations

import io
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from PIL import Image

from bots.web import events
from bots.web import send as web_send
from core.delivery import DeliveryContext
from core.embedded_redis import EmbeddedRedis
from core.jobs import JobStatus
from core.settings import Settings
from tests.helpers.databases import emptied_database
from tests.helpers.settings import make_settings
from tests.helpers.web_api import beyond_localhost, imagine

CID = "events-conversation-1"
pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def served(redis_server: EmbeddedRedis, tmp_path: Path) -> Iterator[tuple[str, Settings]]:
    from bots.web.server import WebServer

    settings = make_settings(emptied_database(redis_server, 19), tmp_path / "data", web_threads=4)
    server = WebServer(settings, host="127.0.0.1", port=0).start()
    yield server.url, settings
    server.stop()


class EventReader:
    """Reads a Server-Sent Events response in a thread; ``events`` grows as they arrive."""

    def __init__(self, response: requests.Response) -> None:
        self.response = response
        self.events: list[dict[str, Any]] = []
        self.comments: list[str] = []
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        event: dict[str, Any] = {}
        try:
            for raw in self.response.iter_lines(chunk_size=1, decode_unicode=True):
                if raw == "":
                    if "event" in event:
                        self.events.append({**event, "data": json.loads(event.get("data", "{}"))})
                    event = {}
                elif raw.startswith(":"):
                    self.comments.append(raw)
                else:
                    name, _, value = raw.partition(": ")
                    event[name] = value
        except (requests.RequestException, AttributeError, ValueError):
            return

    def wait_for(self, check: Any, timeout_s: float = 20.0) -> dict[str, Any]:
        """The first event for which ``check(event)`` holds."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for event in list(self.events):
                if check(event):
                    return event
            time.sleep(0.02)
        raise AssertionError(f"no such event within {timeout_s} s; got {self.events}")

    def close(self) -> None:
        self.response.close()


def open_stream(url: str, cid: str = CID, query: str = "", **headers: str) -> EventReader:
    address = f"{url}/api/conversations/{cid}/events{query}"
    response = requests.get(address, stream=True, timeout=30, headers=headers)
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"].startswith("text/event-stream")
    return EventReader(response)


def a_worker(settings: Settings):  # noqa: ANN201 - worker.runtime.Runtime
    from worker.app import create_app
    from worker.runtime import Runtime

    return Runtime(settings, create_app(settings))


def test_the_stream_pushes_status_progress_and_the_result(
    served: tuple[str, Settings], monkeypatch: pytest.MonkeyPatch
) -> None:
    url, settings = served
    # The stream looks on its own only every 60 s here: what arrives sooner came by a nudge.
    monkeypatch.setattr(events, "LOOK_S", 60.0)
    answer = imagine(url, CID, "a red circle --seed 3 --engine diffusion")
    assert answer.status_code == 202, answer.text
    job_id = answer.json()["job"]["id"]
    stream = open_stream(url)
    queued = stream.wait_for(lambda e: e["event"] == "status" and e["data"]["id"] == job_id)
    assert queued["data"]["status"] == "queued" and queued["data"]["position"] == 1
    assert int(queued["id"]) > 0  # the server's time in ms, sent back as Last-Event-ID on a reconnect

    from worker.generate import _BatchProgress, claim

    rt = a_worker(settings)
    assert claim(rt, job_id).held is not None
    progress = _BatchProgress(rt, {job_id})
    progress.last_write = 0.0
    progress.report("diffusion", 2, 4)  # the worker's progress write nudges the stream
    moved = stream.wait_for(lambda e: e["event"] == "progress")
    assert moved["data"]["progress"] == {**moved["data"]["progress"], "step": 2, "total": 4}

    png = b"\x89PNG not really"
    rt.jobs.finish(job_id, JobStatus.DONE, pair_key=rt.images.put(job_id, "pair", png))
    record = rt.jobs.get(job_id)
    web_send.send(record, DeliveryContext(settings=settings, images=rt.images, history=rt.history))
    result = stream.wait_for(lambda e: e["event"] == "result")
    assert result["data"]["status"] == "done" and result["data"]["delivered"] is True
    assert result["data"]["status_text"] == "Done"  # posted: not "finishing up" any more
    assert result["data"]["image_url"] == f"/api/jobs/{job_id}/pair.png"
    stream.close()


def test_a_reconnect_gets_what_settled_meanwhile(served: tuple[str, Settings]) -> None:
    url, settings = served
    before = str(int(time.time() * 1000))
    job_id = _finished_grid(url, settings, CID, count=1)
    # A reconnect with Last-Event-ID, or the page's ?since= (its oldest pending job), gets the result
    # that settled since; a fresh stream (neither) sends nothing: the page has just read the history.
    again = open_stream(url, **{"Last-Event-ID": before})
    assert again.wait_for(lambda e: e["event"] == "result")["data"]["id"] == job_id
    again.close()
    since = open_stream(url, query=f"?since={before}")
    assert since.wait_for(lambda e: e["event"] == "result")["data"]["id"] == job_id
    since.close()
    fresh = open_stream(url)
    time.sleep(1.5)
    assert fresh.events == []
    fresh.close()


def test_a_preview_url_while_drawing(served: tuple[str, Settings]) -> None:
    url, settings = served
    job_id = imagine(url, CID, "a blue square --engine diffusion").json()["job"]["id"]
    rt = a_worker(settings)
    from core.jobs import Progress
    from worker.generate import claim

    assert claim(rt, job_id).held is not None
    assert requests.get(f"{url}/api/jobs/{job_id}/preview.png", timeout=5).status_code == 404
    key = f"ib:preview:{job_id}"
    rt.redis.set(key, b"\x89PNG preview", ex=60)
    progress = Progress(engine="diffusion", step=3, total=8, preview_key=key)
    rt.jobs.renew(job_id, settings.job_lease_s, progress=progress)
    job = requests.get(f"{url}/api/jobs/{job_id}", timeout=5).json()["job"]
    assert job["preview_url"] == f"/api/jobs/{job_id}/preview.png?step=3"
    got = requests.get(url + job["preview_url"], timeout=5)
    assert (got.status_code, got.content, got.headers["Content-Type"]) == (
        200,
        b"\x89PNG preview",
        "image/png",
    )


def test_streams_are_limited_and_leave_the_server_free(served: tuple[str, Settings]) -> None:
    url, settings = served
    imagine(url, CID, "a red circle")
    limit = settings.web_threads // 2
    streams = [open_stream(url) for _ in range(limit)]
    for stream in streams:
        stream.wait_for(lambda e: e["event"] == "status")
    # All stream slots taken: one more is told to poll, and ordinary requests still answer.
    extra = requests.get(f"{url}/api/conversations/{CID}/events", timeout=5)
    assert (extra.status_code, extra.json()["code"]) == (503, "too_many_streams")
    for _ in range(5):
        assert requests.get(f"{url}/api/conversations/{CID}", timeout=5).status_code == 200
    # A stream whose browser went away gives its slot back (waitress notices the closed connection).
    streams.pop().close()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        again = requests.get(f"{url}/api/conversations/{CID}/events", stream=True, timeout=5)
        if again.status_code == 200:
            again.close()
            break
        time.sleep(0.5)
    else:
        raise AssertionError("the closed stream's slot never came back")
    for stream in streams:
        stream.close()


def test_who_may_listen(served: tuple[str, Settings]) -> None:
    url, settings = served
    assert requests.get(f"{url}/api/conversations/no/events", timeout=5).status_code == 400
    unknown = requests.get(f"{url}/api/conversations/nobody-talked-here/events", timeout=5)
    assert (unknown.status_code, unknown.json()["code"]) == (404, "not_found")
    # Beyond localhost: signed in first, like every other endpoint.
    web = beyond_localhost(settings, CID)
    from bots.web.app import create_app

    outsider = create_app(settings.model_copy(update={"web_host": "0.0.0.0", "web_access_password": "x"}))
    answer = outsider.test_client().get(f"/api/conversations/{CID}/events")
    assert (answer.status_code, answer.get_json()["code"]) == (401, "login_required")
    assert web.get("/api/conversations/nobody-talked-here/events").status_code == 404


def _finished_grid(url: str, settings: Settings, cid: str, count: int = 2) -> str:
    """A ``--n count`` diffusion job of ``cid``, drawn (plain coloured squares stored as the worker
    stores them) and delivered to the web chat; returns its id."""
    from core.compose import to_png
    from core.jobs import EngineResult
    from worker.generate import claim

    job_id = imagine(url, cid, f"a green square --n {count} --engine diffusion").json()["job"]["id"]
    rt = a_worker(settings)
    assert claim(rt, job_id).held is not None
    keys = [
        rt.images.put(job_id, f"diffusion-{i}", to_png(Image.new("RGB", (32, 32), (0, 40 * i, 0))))
        for i in range(count)
    ]
    result = EngineResult(engine="diffusion", version="test-1", seconds=0.1, image_keys=keys)
    pair = rt.images.put(job_id, "pair", to_png(Image.new("RGB", (64, 32))))
    rt.jobs.finish(job_id, JobStatus.DONE, results=[result], pair_key=pair)
    ctx = DeliveryContext(settings=settings, images=rt.images, history=rt.history)
    web_send.send(rt.jobs.get(job_id), ctx)
    rt.jobs.update(job_id, lambda r: r.model_copy(update={"delivered_at": time.time()}))
    return job_id


def press(url: str, cid: str, data: str, **more: str) -> requests.Response:
    return requests.post(f"{url}/api/conversations/{cid}/buttons", json={"data": data, **more}, timeout=10)


def test_result_buttons_from_the_web_chat(served: tuple[str, Settings]) -> None:
    url, settings = served
    job_id = _finished_grid(url, settings, CID)
    job = requests.get(f"{url}/api/jobs/{job_id}", timeout=5).json()["job"]
    labels = [[b["label"] for b in row] for row in job["buttons"]]
    assert labels == [["U1", "U2"], ["V1", "V2"], ["🔄", "ℹ️ Info", "✏️ Remix"]]

    # U2: the second picture alone, full size, with the buttons under a picked picture.
    picked = press(url, CID, job["buttons"][0][1]["data"])
    assert picked.status_code == 200, picked.text
    shown = picked.json()["picked"]
    assert [p["url"] for p in shown["pictures"]] == [f"/api/jobs/{job_id}/images/diffusion-1.png"]
    png = requests.get(url + shown["pictures"][0]["url"], timeout=5)
    assert Image.open(io.BytesIO(png.content)).getpixel((0, 0)) == (0, 40, 0)
    assert [b["label"] for b in shown["buttons"][0]] == ["Upscale ×2", "Vary", "✏️ Remix"]
    history = requests.get(f"{url}/api/conversations/{CID}", timeout=5).json()["messages"]
    assert history[-1]["role"] == "picked" and history[-1]["picked"] == shown  # kept for a reload

    # Info answers in words; V1 queues a variation drawn from the stored picture.
    info = press(url, CID, f"i:{job_id}")
    assert info.status_code == 200 and "seed" in info.json()["message"]
    varied = press(url, CID, f"v:{job_id}:0")
    assert varied.status_code == 202, varied.text
    assert varied.json()["job"]["image_input"] is True and varied.json()["job"]["id"] != job_id

    # ✏️ Remix: first the prompt to edit, then the edited prompt queues the remix.
    asked = press(url, CID, f"rx:{job_id}:1").json()["remix"]
    assert (asked["prompt"], asked["index"]) == ("a green square", 1)
    remix = press(url, CID, f"rx:{job_id}:1", prompt="a blue square")
    assert remix.status_code == 202 and remix.json()["job"]["prompt"] == "a blue square"

    # /show typed in the chat brings the result back with its buttons.
    again = imagine(url, CID, f"/show {job_id}")
    assert again.status_code == 200 and again.json()["shown"]["buttons"] == job["buttons"]


def test_buttons_and_show_of_another_conversation_are_refused(served: tuple[str, Settings]) -> None:
    url, settings = served
    job_id = _finished_grid(url, settings, CID)
    other = "events-conversation-2"
    imagine(url, other, "/models")  # the other conversation exists
    for data in (f"u:{job_id}:0", f"v:{job_id}:0", f"rr:{job_id}", f"i:{job_id}"):
        answer = press(url, other, data)
        assert (answer.status_code, answer.json()["code"]) == (403, "not_this_chat"), data
    assert imagine(url, other, f"/show {job_id}").json()["code"] == "not_this_chat"
    forged = press(url, CID, "u:nothing")
    assert (forged.status_code, forged.json()["code"]) == (400, "unknown_button")
    assert press(url, CID, f"u:{job_id}:7").json()["code"] == "no_such_picture"
    gone = press(url, CID, f"u:{'0' * 16}:0")
    assert (gone.status_code, gone.json()["code"]) == (404, "expired")
