"""The local web chat (Flask): a page plus a small JSON API that scripts can drive too.

Endpoints (all JSON unless noted):

- ``POST /api/imagine`` ``{"conversation_id": "...", "text": "/imagine a red circle --seed 3"}``
  → 202 ``{"job": {...}}``, or 4xx ``{"error": "...", "code": "..."}``
- ``GET /api/jobs/<id>`` → ``{"job": {...}}`` with status, queue position, progress, image URLs
- ``POST /api/jobs/<id>/cancel`` ``{"conversation_id": "..."}``
- ``GET /api/jobs/<id>/pair.png`` and ``/api/jobs/<id>/images/<engine>-<i>.png`` → PNG
- ``GET /api/runs/<run_id>/<loss-curve|old-vs-new>.png`` → a finished training run's pictures
- ``GET /api/conversations/<conversation_id>`` → ``{"messages": [...]}`` (history, survives reloads)
"""

from __future__ import annotations

import hmac
import logging
import re
from pathlib import Path
from typing import Any

import kombu.exceptions
import redis
from flask import Flask, Response, jsonify, request, send_from_directory

from bots.web.security import client_ip, parse_networks
from bots.web.security import install as install_security
from core.commands import is_retrain_cancel, parse_retrain, parse_retrain_cancel
from core.errors import InputError, JobNotFound
from core.heartbeats import health_summary, job_notice
from core.ids import is_conversation_id, is_job_id, is_run_id
from core.job_client import QueueClient
from core.jobs import Conversation, JobRecord, JobStatus
from core.limits import RateLimiter
from core.prompt import check_text
from core.settings import Settings
from core.training_client import TrainingClient, cancelled_text
from core.validation import request_from_text

log = logging.getLogger(__name__)
STATIC_DIR = Path(__file__).parent / "static"
IMAGE_NAME = re.compile(r"pair|[a-z-]+-\d")
#: The pictures a finished training run stores (worker.train_task.RUN_PICTURES; no torch import here).
RUN_PICTURE = re.compile(r"progress-(25|50|75)|loss-curve|old-vs-new|samples")
MAX_BODY = 16 * 1024
#: Refused ``/retrain`` attempts a client may make per window (beyond localhost), against guessing.
ADMIN_PASSWORD_TRIES = 5
ADMIN_PASSWORD_WINDOW_S = 15 * 60
#: What a client is told while Redis cannot be reached: try again in about a minute.
UNAVAILABLE_RETRY_S = 60


def job_view(record: JobRecord, position: int | None, notice: str | None = None) -> dict[str, Any]:
    """The JSON shape of a job that the page and scripts read (``notice``: no worker can draw it yet)."""
    req = record.request
    done = record.status == JobStatus.DONE
    return {
        "id": record.id,
        "prompt": req.prompt,
        "status": record.status.value,
        "position": position,
        "notice": notice,
        "progress": record.progress.model_dump() if record.progress else None,
        "seed": record.seed,
        "engines": req.engines,
        "steps": record.steps,
        "count": req.count,
        "size": record.size,
        "negative": req.negative_prompt,
        "error": record.error,
        "delivered": record.delivered_at is not None,
        "created_at": record.created_at,
        "image_url": f"/api/jobs/{record.id}/pair.png" if done and record.pair_key else None,
        "images": [
            {
                "engine": r.engine,
                "version": r.version,
                "seconds": round(r.seconds, 3),
                "urls": [f"/api/jobs/{record.id}/images/{k.rsplit(':', 1)[1]}.png" for k in r.image_keys],
            }
            for r in record.results
        ],
    }


def _error(exc: InputError, status: int) -> tuple[Response, int]:
    response = jsonify(exc.to_dict())
    if exc.retry_after is not None:
        response.headers["Retry-After"] = str(int(exc.retry_after + 0.999))
    return response, status


ERROR_STATUS = {
    "rate_limited": 429,
    "queue_full": 503,
    "not_admin": 403,
    "not_your_job": 403,
    "no_run": 404,
    "unknown_run": 404,
    "already_finished": 409,
    "admin_password_unset": 403,
    "bad_admin_password": 403,
    "too_many_attempts": 429,
}


def create_app(settings: Settings, queue: QueueClient | None = None) -> Flask:
    """The web chat app, talking to the queue described by ``settings``."""
    app = Flask(__name__, static_folder=None)
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY
    client = queue or QueueClient(settings)
    trainer = TrainingClient(settings, client.redis, client.producer)
    install_security(app, settings, client)  # headers, allowed hosts, access password, rate limits, /metrics

    guesses = RateLimiter(client.redis, ADMIN_PASSWORD_TRIES, ADMIN_PASSWORD_WINDOW_S)
    proxies = parse_networks(settings.web_trusted_proxies)

    def check_admin_password(data: dict[str, Any], cid: str) -> None:
        """Beyond localhost, web-chat ``/retrain`` (start and cancel) also needs the admin password:
        a conversation id alone is only a browser's random token. ``settings.web_host`` is the address
        the server really binds (the server passes it in). A wrong password and a conversation that
        is not an admin's get the same answer, and each client has few tries per window."""
        if settings.web_is_local:
            return
        wanted = settings.web_admin_password
        if not wanted:
            raise InputError(
                "admin_password_unset",
                "/retrain from the web chat is off: it listens beyond localhost and "
                "IMAGINEBOT_WEB_ADMIN_PASSWORD is not set.",
            )
        address = client_ip(request.remote_addr or "", request.headers.get("X-Forwarded-For"), proxies)
        client_key = f"web-admin-password:{address}"
        wait = guesses.blocked_for(client_key)
        if wait is not None:
            raise InputError(
                "too_many_attempts",
                f"Too many refused /retrain attempts from here. Try again in {wait:.0f} s.",
                retry_after=wait,
            )
        given = data.get("admin_password")
        given_bytes = given.encode("utf-8", "surrogatepass") if isinstance(given, str) else b""
        right = hmac.compare_digest(given_bytes, wanted.encode())
        if not (right and settings.is_admin("web", cid)):
            guesses.record(client_key)
            raise InputError(
                "bad_admin_password",
                "/retrain was refused: it needs an admin's conversation and the right admin password.",
            )

    def json_object() -> dict[str, Any]:
        """The request's JSON body, which must be an object (no body at all counts as ``{}``)."""
        if not request.get_data(cache=True):
            return {}
        data = request.get_json(silent=True)
        if not isinstance(data, dict):
            raise InputError(
                "bad_json",
                "The request body must be a JSON object, e.g. "
                '{"conversation_id": "...", "text": "a red circle"}.',
            )
        return data

    def prompt_text(data: dict[str, Any]) -> str:
        """The ``text`` field: present, a string, valid Unicode; cut to a sane length."""
        text = data.get("text")
        if text is None:
            raise InputError("missing_text", 'Say what to draw: the field "text" is missing or null.')
        if not isinstance(text, str):
            raise InputError("bad_text", 'The field "text" must be a string, e.g. "a red circle".')
        check_text(text)
        return text[: settings.max_prompt_chars * 4]

    def conversation_id(data: dict[str, Any]) -> str:
        cid = str(data.get("conversation_id", ""))
        if not is_conversation_id(cid):
            raise InputError("bad_conversation", "conversation_id must be 8-64 letters, digits, - or _.")
        return cid

    # no-cache: browsers revalidate (cheap 304s), so an upgrade never runs an old app.js.
    @app.get("/")
    def index() -> Response:
        return send_from_directory(STATIC_DIR, "index.html", max_age=0)

    @app.get("/static/<path:name>")
    def static_file(name: str) -> Response:
        response = send_from_directory(STATIC_DIR, name, max_age=0)
        response.headers["Cache-Control"] = "no-cache"
        return response

    @app.get("/api/health")
    def health() -> Response:
        client.redis.ping()
        # Live workers, "no worker is serving …" and children `imaginebot up` gave up on.
        summary = health_summary(client.redis, settings.default_engines)
        return jsonify({"ok": True, "engines": settings.enabled_engines, **summary})

    @app.post("/api/imagine")
    def imagine() -> tuple[Response, int]:
        try:
            data = json_object()
            cid = conversation_id(data)
            text = prompt_text(data)
        except InputError as exc:
            return _error(exc, 400)
        history = client.history
        history.append("web", cid, {"role": "user", "text": text})
        try:
            if text.strip().lower().startswith("/retrain"):
                check_admin_password(data, cid)
            if text.strip().lower().startswith("/retrain") and is_retrain_cancel(text):
                run_id = parse_retrain_cancel(text, settings, "web", cid)  # admins only; id checked
                run = trainer.cancel_from_chat(run_id, f"web:{cid}")
                message = cancelled_text(run)
                history.append("web", cid, {"role": "bot", "text": message, "run_id": run.id})
                return jsonify({"run": run.model_dump(mode="json"), "message": message}), 200
            if text.strip().lower().startswith("/retrain"):
                plan = parse_retrain(text, settings, "web", cid)  # admins and known datasets only
                run = trainer.submit_retrain(plan, f"web:{cid}", Conversation(platform="web", chat_id=cid))
                # The train worker posts progress and the result into this conversation's history.
                message = (
                    f"Retraining DF-GAN on {run.dataset} ({run.epochs} epochs) queued as run {run.id}; "
                    "progress and the result follow in this conversation."
                )
                history.append("web", cid, {"role": "bot", "text": message, "run_id": run.id})
                return jsonify({"run": run.model_dump(mode="json"), "message": message}), 202
            job_request = request_from_text(
                text, settings, user=f"web:{cid}", conversation=Conversation(platform="web", chat_id=cid)
            )
            record = client.submit(job_request)
        except InputError as exc:
            history.append("web", cid, {"role": "bot", "text": exc.message, "code": exc.code})
            return _error(exc, ERROR_STATUS.get(exc.code, 400))
        # Point the user's message at its job so a reloaded page can show the job's state.
        history.append("web", cid, {"role": "job", "job_id": record.id})
        position = client.position(record.id)
        return jsonify({"job": job_view(record, position, job_notice(client.redis, record))}), 202

    @app.get("/api/jobs/<job_id>")
    def job_status(job_id: str) -> tuple[Response, int]:
        if not is_job_id(job_id):
            return jsonify({"error": "No such job.", "code": "not_found"}), 404
        try:
            record, position = client.status(job_id)
        except JobNotFound:
            return jsonify({"error": "No such job (it may have expired).", "code": "not_found"}), 404
        return jsonify({"job": job_view(record, position, job_notice(client.redis, record))}), 200

    @app.post("/api/jobs/<job_id>/cancel")
    def cancel(job_id: str) -> tuple[Response, int]:
        if not is_job_id(job_id):
            return jsonify({"error": "No such job.", "code": "not_found"}), 404
        try:
            data = json_object()
            cid = conversation_id(data)
            record = client.cancel(job_id, user=f"web:{cid}")
        except JobNotFound:
            return jsonify({"error": "No such job.", "code": "not_found"}), 404
        except InputError as exc:
            return _error(exc, ERROR_STATUS.get(exc.code, 400 if exc.code == "bad_json" else 409))
        return jsonify({"job": job_view(record, None)}), 200

    @app.get("/api/jobs/<job_id>/pair.png")
    def pair_png(job_id: str) -> Response | tuple[Response, int]:
        return image_png(job_id, "pair")

    @app.get("/api/jobs/<job_id>/images/<name>.png")
    def image_png(job_id: str, name: str) -> Response | tuple[Response, int]:
        if not is_job_id(job_id) or not IMAGE_NAME.fullmatch(name):
            return jsonify({"error": "No such image.", "code": "not_found"}), 404
        png = client.images.get(client.images.key(job_id, name))
        if png is None:
            return jsonify({"error": "No such image (it may have expired).", "code": "not_found"}), 404
        return Response(png, mimetype="image/png", headers={"Cache-Control": "private, max-age=86400"})

    @app.get("/api/runs/<run_id>/<name>.png")
    def run_png(run_id: str, name: str) -> Response | tuple[Response, int]:
        if not is_run_id(run_id) or not RUN_PICTURE.fullmatch(name):
            return jsonify({"error": "No such picture.", "code": "not_found"}), 404
        png = client.images.get(client.images.key(run_id, name))
        if png is None:
            return jsonify({"error": "No such picture (it may have expired).", "code": "not_found"}), 404
        return Response(png, mimetype="image/png", headers={"Cache-Control": "private, max-age=86400"})

    @app.get("/api/conversations/<cid>")
    def conversation(cid: str) -> tuple[Response, int]:
        if not is_conversation_id(cid):
            return jsonify({"error": "Bad conversation id.", "code": "bad_conversation"}), 400
        messages: list[dict[str, Any]] = []
        for event in client.history.read("web", cid):
            if event.get("role") == "job":
                try:
                    record, position = client.status(str(event["job_id"]))
                except JobNotFound:
                    messages.append({"role": "bot", "text": "This job has expired.", "ts": event["ts"]})
                    continue
                messages.append({"role": "job", "ts": event["ts"], "job": job_view(record, position)})
            elif event.get("role") in ("user", "bot") and "text" in event and "job_id" not in event:
                message = {"role": event["role"], "text": event["text"], "ts": event["ts"]}
                if "code" in event:
                    message["code"] = event["code"]  # lets the page style errors apart from notices
                if "run_id" in event:
                    message["run_id"] = event["run_id"]
                if str(event.get("image_url", "")).startswith("/api/runs/"):
                    message["image_url"] = event["image_url"]  # a training run's picture
                messages.append(message)
        return jsonify({"messages": messages}), 200

    @app.errorhandler(413)
    def too_large(_: Exception) -> tuple[Response, int]:
        return jsonify({"error": "Request too large.", "code": "too_large"}), 413

    @app.errorhandler(redis.RedisError)
    @app.errorhandler(kombu.exceptions.OperationalError)
    def queue_unavailable(exc: Exception) -> tuple[Response, int]:
        """Redis down or unreachable: a clear JSON 503, and the client knows when to come back."""
        log.warning("queue unavailable: %s", exc)
        response = jsonify(
            {"error": "The queue is unavailable, try again in a minute.", "code": "queue_unavailable"}
        )
        response.headers["Retry-After"] = str(UNAVAILABLE_RETRY_S)
        return response, 503

    @app.errorhandler(500)
    def internal_error(_: Exception) -> tuple[Response, int]:
        return jsonify({"error": "Something went wrong on our side. Try again.", "code": "internal"}), 500

    return app
