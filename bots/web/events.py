"""Push to the web chat: Server-Sent Events per conversation, and the pictures that go with them.

- ``GET /api/conversations/<cid>/events`` → ``text/event-stream``. Events (``data`` is JSON):

  - ``status`` / ``progress`` / ``result``: a job's view (the shape of ``GET /api/jobs/<id>``,
    :func:`bots.web.api.job_view`) whenever it changes: queued with its position, running with its
    progress (and ``preview_url`` when the engine stored a preview), then finished and delivered
    (``result``: the picture is in the conversation);
  - ``notice``: a training run's message added to the history (the shape of a history message);
  - ``idle``: nothing has been pending for a while; the stream ends and the page need not reconnect.

  Each event's ``id`` is the server's time in ms. On connecting, the stream sends every pending job of
  the conversation, and the jobs settled since ``Last-Event-ID`` (a reconnect) or ``?since=<ms>``
  (the page's oldest pending job), so a job that finished in between is never missed. A comment
  every :data:`HEARTBEAT_S` keeps proxies from closing a quiet stream; after :data:`MAX_STREAM_S` the
  stream ends and the browser reconnects (``retry``) with ``Last-Event-ID``.

  A stream holds one of waitress' threads, so at most half of them stream at once (:class:`Slots`):
  beyond that the answer is 503 ``too_many_streams`` and the page polls ``GET /api/jobs/<id>`` as
  before. An id that is not a conversation id is a 400, a conversation with no history a 404; beyond
  localhost the guards ask for the sign-in first (401), like every other endpoint.
- ``GET /api/jobs/<id>/preview.png`` → the running job's latest preview (404 when there is none).

Nudges (:mod:`core.events`) wake a stream at once when the history changes or a worker writes
progress; otherwise it looks at its pending jobs every :data:`LOOK_S` (queue positions move on
their own).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import redis
from flask import Blueprint, Response, current_app, jsonify, request

from bots.web.api import chat, job_view, not_found
from core.errors import JobNotFound
from core.events import Subscription
from core.heartbeats import job_notice
from core.ids import is_conversation_id, is_job_id
from core.job_client import QueueClient
from core.jobs import JobRecord, JobStatus

HEARTBEAT_S = 15.0
LOOK_S = 1.0
MAX_STREAM_S = 300.0
#: With nothing pending this long, the stream says ``idle`` and ends.
IDLE_END_S = 60.0
RETRY_MS = 1000
#: Jobs settled this long before the cutoff are sent again on connecting (clocks and races).
SETTLED_MARGIN_S = 5.0

events_api = Blueprint("events_api", __name__, url_prefix="/api")


class Slots:
    """How many event streams may run at once in this app (each holds a server thread)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._free = threading.BoundedSemaphore(limit)

    def take(self) -> bool:
        """Take a slot; False when all are in use."""
        return self._free.acquire(blocking=False)

    def give_back(self) -> None:
        """Free a slot taken by :meth:`take`."""
        self._free.release()


def slots() -> Slots:
    """The current app's stream slots: half of the server's threads (at least one)."""
    found = current_app.extensions.get("imaginebot_streams")
    if found is None:
        found = current_app.extensions["imaginebot_streams"] = Slots(max(1, chat().settings.web_threads // 2))
    return found


def sse(kind: str, data: dict[str, Any]) -> str:
    """One Server-Sent Event, its ``id`` the server's time in ms."""
    body = json.dumps(data, separators=(",", ":"))
    return f"id: {int(time.time() * 1000)}\nevent: {kind}\ndata: {body}\n\n"


def _cutoff() -> float | None:
    """Seconds since the epoch from ``Last-Event-ID`` (a reconnect) or ``?since=`` (ms), else None."""
    for raw in (request.headers.get("Last-Event-ID"), request.args.get("since")):
        if raw and raw.isdigit() and len(raw) < 16:
            return int(raw) / 1000
    return None


@events_api.get("/conversations/<cid>/events")
def conversation_events(cid: str) -> tuple[Response, int]:
    """The conversation's event stream (see the module's docstring)."""
    if not is_conversation_id(cid):
        return jsonify({"error": "Bad conversation id.", "code": "bad_conversation"}), 400
    web = chat()
    if not web.queue.history.read("web", cid):
        return jsonify({"error": "No such conversation.", "code": "not_found"}), 404
    streams = slots()
    if not streams.take():
        response = jsonify({"error": "Too many live streams; polling instead.", "code": "too_many_streams"})
        response.headers["Retry-After"] = "30"
        return response, 503
    feed = Feed(web.queue, cid, _cutoff())
    gone = request.environ.get("waitress.client_disconnected", lambda: False)
    response = Response(feed.stream(gone), mimetype="text/event-stream")
    response.headers["Cache-Control"] = "no-store"
    response.headers["X-Accel-Buffering"] = "no"  # nginx: pass each event on at once
    response.call_on_close(streams.give_back)
    return response, 200


@events_api.get("/jobs/<job_id>/preview.png")
def preview_png(job_id: str) -> Response | tuple[Response, int]:
    """A running job's latest preview picture."""
    if not is_job_id(job_id):
        return not_found()
    queue = chat().queue
    try:
        record = queue.jobs.get(job_id)
    except JobNotFound:
        return not_found("No such job (it may have expired).")
    key = getattr(record.progress, "preview_key", None)
    png = queue.redis.get(key) if key else None
    if png is None:
        return not_found("No preview (yet).")
    return Response(png, mimetype="image/png", headers={"Cache-Control": "no-store"})


def settled(record: JobRecord, told: bool) -> bool:
    """Whether the page is done with a job: delivered (or told), or failed or cancelled."""
    delivered = record.delivered_at is not None or told
    return record.status.finished and (delivered or record.status != JobStatus.DONE)


class Feed:
    """What one stream has sent of a conversation, and what changed since."""

    def __init__(self, queue: QueueClient, cid: str, cutoff: float | None) -> None:
        self.queue = queue
        self.cid = cid
        self.cutoff = cutoff
        self.sent: dict[str, dict[str, Any]] = {}  # job id -> the view last sent
        self.pending: set[str] = set()  # jobs the page still waits on
        self.told: dict[str, float] = {}  # job id -> when the history got the bot's word on it
        self.seen_ts = cutoff - SETTLED_MARGIN_S if cutoff is not None else 0.0  # newest history read

    def stream(self, gone: Callable[[], bool]) -> Iterator[str]:
        """The event stream: until :data:`MAX_STREAM_S`, idle, Redis trouble, or the client leaves
        (``gone()``: the server noticed the connection closed)."""
        started = last_write = idle_since = time.monotonic()
        try:
            with Subscription(self.queue.redis, "web", self.cid) as nudges:
                yield f"retry: {RETRY_MS}\n\n"
                events = self.read_history(first=True) + self.look()
                while time.monotonic() - started < MAX_STREAM_S and not gone():
                    for kind, data in events:
                        yield sse(kind, data)
                        last_write = time.monotonic()
                    now = time.monotonic()
                    idle_since = idle_since if not self.pending else now
                    if now - idle_since > IDLE_END_S:
                        yield sse("idle", {})
                        return
                    if now - last_write > HEARTBEAT_S:
                        yield ": keepalive\n\n"
                        last_write = now
                    woke = nudges.wait(LOOK_S)
                    history = any(n.get("kind") == "history" for n in woke)
                    events = (self.read_history() if history else []) + self.look()
        except redis.RedisError:
            return  # the browser reconnects; a 503 there turns the page to polling

    def read_history(self, first: bool = False) -> list[tuple[str, dict[str, Any]]]:
        """Learn new jobs and deliveries from the history; the training notices not sent yet (none
        on the first read without a cutoff: the page has just read the history itself)."""
        notices, newest = [], self.seen_ts
        emit = not first or self.cutoff is not None
        for event in self.queue.history.read("web", self.cid):
            job_id, role, ts = event.get("job_id"), event.get("role"), float(event.get("ts", 0))
            if role == "job" and isinstance(job_id, str) and job_id not in self.sent:
                self.pending.add(job_id)
            elif role == "bot" and isinstance(job_id, str):
                self.told.setdefault(job_id, ts)
            elif role == "bot" and "run_id" in event and emit and ts > self.seen_ts:
                notices.append(("notice", _notice(event)))
            newest = max(newest, ts)
        self.seen_ts = newest
        return notices

    def look(self) -> list[tuple[str, dict[str, Any]]]:
        """Events for the pending jobs whose view changed."""
        events = []
        for job_id in sorted(self.pending):
            try:
                record, position = self.queue.status(job_id)
            except JobNotFound:
                self.pending.discard(job_id)
                continue
            told = job_id in self.told
            done = settled(record, told)
            if done:
                self.pending.discard(job_id)
                if job_id not in self.sent and not self._settled_since_cutoff(record):
                    self.sent[job_id] = {}  # the page had it settled already
                    continue
            if told and record.status.finished and record.delivered_at is None:
                # Posted into the history; the delivery marks the record a moment later.
                record = record.model_copy(update={"delivered_at": self.told[job_id]})
            view = job_view(record, position, job_notice(self.queue.redis, record))
            if view != self.sent.get(job_id):
                self.sent[job_id] = view
                events.append((_kind(view, done), view))
        return events

    def _settled_since_cutoff(self, record: JobRecord) -> bool:
        if self.cutoff is None:
            return False
        at = max(record.delivered_at or 0, record.finished_at or 0, self.told.get(record.id, 0))
        return at >= self.cutoff - SETTLED_MARGIN_S


def _kind(view: dict[str, Any], done: bool) -> str:
    if done:
        return "result"
    return "progress" if view["status"] == JobStatus.RUNNING.value and view["progress"] else "status"


def _notice(event: dict[str, Any]) -> dict[str, Any]:
    """A training run's notice as the page shows a history message."""
    notice = {"role": "bot", "text": event.get("text", ""), "ts": event.get("ts"), "run_id": event["run_id"]}
    if str(event.get("image_url", "")).startswith("/api/runs/"):
        notice["image_url"] = event["image_url"]
    return notice
