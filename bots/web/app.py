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
import re
from pathlib import Path
from typing import Any

from flask import Flask, Response, jsonify, request, send_from_directory

from core.commands import is_retrain_cancel, parse_retrain, parse_retrain_cancel
from core.errors import InputError, JobNotFound
from core.heartbeats import health_summary, job_notice
from core.jobs import Conversation, JobRecord, JobStatus
from core.queue import QueueClient
from core.settings import Settings
from core.training_client import TrainingClient, cancelled_text
from core.validation import request_from_text

STATIC_DIR = Path(__file__).parent / "static"
CONVERSATION_ID = re.compile(r"^[A-Za-z0-9_-]{8,64}$")
JOB_ID = re.compile(r"^[0-9a-f]{16}$")
IMAGE_NAME = re.compile(r"^(pair|[a-z-]+-\d)$")
RUN_ID = re.compile(r"^[0-9a-f]{16}$")
#: The pictures a finished training run stores (worker.train_task.RUN_PICTURES; no torch import here).
RUN_PICTURE = re.compile(r"^(loss-curve|old-vs-new)$")
MAX_BODY = 16 * 1024


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
}


def create_app(settings: Settings, queue: QueueClient | None = None) -> Flask:
    """The web chat app, talking to the queue described by ``settings``."""
    app = Flask(__name__, static_folder=None)
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY
    client = queue or QueueClient(settings)
    trainer = TrainingClient(settings, client.redis, client.producer)
    from bots.web.security import install as install_security

    install_security(app, settings, client)  # headers, allowed hosts, access password, rate limits, /metrics

    def check_admin_password(data: dict[str, Any]) -> None:
        """Beyond localhost, web-chat ``/retrain`` (start and cancel) also needs the admin password:
        a conversation id alone is only a browser's random token."""
        if settings.web_is_local:
            return
        wanted = settings.web_admin_password
        if not wanted:
            raise InputError(
                "admin_password_unset",
                "/retrain from the web chat is off: it listens beyond localhost and "
                "IMAGINEBOT_WEB_ADMIN_PASSWORD is not set.",
            )
        given = str(data.get("admin_password") or "")
        if not hmac.compare_digest(given.encode(), wanted.encode()):
            raise InputError("bad_admin_password", "Wrong or missing admin password for /retrain.")

    def conversation_id(data: dict[str, Any]) -> str:
        cid = str(data.get("conversation_id", ""))
        if not CONVERSATION_ID.match(cid):
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
        data = request.get_json(silent=True) or {}
        try:
            cid = conversation_id(data)
        except InputError as exc:
            return _error(exc, 400)
        text = str(data.get("text", ""))[: settings.max_prompt_chars * 4]
        history = client.history
        history.append("web", cid, {"role": "user", "text": text})
        try:
            if text.strip().lower().startswith("/retrain"):
                check_admin_password(data)
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
        if not JOB_ID.match(job_id):
            return jsonify({"error": "No such job.", "code": "not_found"}), 404
        try:
            record, position = client.status(job_id)
        except JobNotFound:
            return jsonify({"error": "No such job (it may have expired).", "code": "not_found"}), 404
        return jsonify({"job": job_view(record, position, job_notice(client.redis, record))}), 200

    @app.post("/api/jobs/<job_id>/cancel")
    def cancel(job_id: str) -> tuple[Response, int]:
        data = request.get_json(silent=True) or {}
        if not JOB_ID.match(job_id):
            return jsonify({"error": "No such job.", "code": "not_found"}), 404
        try:
            cid = conversation_id(data)
            record = client.cancel(job_id, user=f"web:{cid}")
        except JobNotFound:
            return jsonify({"error": "No such job.", "code": "not_found"}), 404
        except InputError as exc:
            return _error(exc, ERROR_STATUS.get(exc.code, 409))
        return jsonify({"job": job_view(record, None)}), 200

    @app.get("/api/jobs/<job_id>/pair.png")
    def pair_png(job_id: str) -> Response | tuple[Response, int]:
        return image_png(job_id, "pair")

    @app.get("/api/jobs/<job_id>/images/<name>.png")
    def image_png(job_id: str, name: str) -> Response | tuple[Response, int]:
        if not JOB_ID.match(job_id) or not IMAGE_NAME.match(name):
            return jsonify({"error": "No such image.", "code": "not_found"}), 404
        png = client.images.get(client.images.key(job_id, name))
        if png is None:
            return jsonify({"error": "No such image (it may have expired).", "code": "not_found"}), 404
        return Response(png, mimetype="image/png", headers={"Cache-Control": "private, max-age=86400"})

    @app.get("/api/runs/<run_id>/<name>.png")
    def run_png(run_id: str, name: str) -> Response | tuple[Response, int]:
        if not RUN_ID.match(run_id) or not RUN_PICTURE.match(name):
            return jsonify({"error": "No such picture.", "code": "not_found"}), 404
        png = client.images.get(client.images.key(run_id, name))
        if png is None:
            return jsonify({"error": "No such picture (it may have expired).", "code": "not_found"}), 404
        return Response(png, mimetype="image/png", headers={"Cache-Control": "private, max-age=86400"})

    @app.get("/api/conversations/<cid>")
    def conversation(cid: str) -> tuple[Response, int]:
        if not CONVERSATION_ID.match(cid):
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

    return app
