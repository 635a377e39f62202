"""The web chat's JSON API (a Flask blueprint). Each view reads the request, calls the conversation
service (:mod:`core.conversation`) or the stores, and renders the answer as JSON.

- ``POST /api/imagine`` ``{"conversation_id": "...", "text": "/imagine a red circle --seed 3"}``
  → 202 ``{"job": {...}}``, or 4xx ``{"error": "...", "code": "..."}``; ``/retrain ...`` text →
  ``{"run": {...}, "message": "..."}`` (202 queued, 200 cancelled). The same as ``multipart/form-data``
  (fields ``conversation_id``, ``text``, file ``image``) draws from the picture (image-to-image,
  ``--strength``): a bad picture is a 400 with its code (``image_format``, ``image_too_big`` …).
  ``/models`` text → 200 ``{"message": "..."}`` (the models and LoRAs); an admin's ``/nsfw
  withhold|spoiler|allow|default`` → 200 ``{"message": "..."}`` (the conversation's rule; beyond
  localhost with the admin password, as ``/retrain``); an admin's ``/model [list|promote
  VERSION|rollback] [model:diffusion]`` → 200 ``{"message": "..."}`` (the same password rule)
- ``GET /api/models`` → ``{"models": [{"name", "description"}], "loras": [...]}``
- ``GET /api/jobs/<id>`` → ``{"job": {...}}`` with status, queue position, progress, image URLs
- ``POST /api/jobs/<id>/cancel`` ``{"conversation_id": "..."}``
- ``GET /api/jobs/<id>/pair.png`` and ``/api/jobs/<id>/images/<engine>-<i>.png`` → PNG
- ``GET /api/runs/<run_id>/<loss-curve|old-vs-new|…>.png`` → a training run's pictures
- ``GET /api/conversations/<conversation_id>`` → ``{"messages": [...]}`` (history, survives reloads)
- ``POST /api/conversations/<conversation_id>/buttons`` ``{"data": "u:<job>:1"}`` → a result button
  (``buttons`` of a job's view, core/result_buttons.py): ``{"picked"}`` (U-n), ``{"job"}`` (V-n, 🔄,
  Remix with ``"prompt"``, Upscale), ``{"remix"}`` (Remix without a prompt: the one to edit),
  ``{"message"}`` (Info); ``/show <job>`` as text → ``{"shown": {...}}``
- ``GET /api/conversations/<conversation_id>/events`` (Server-Sent Events) and
  ``GET /api/jobs/<id>/preview.png``: bots/web/events.py
- ``GET /api/health``
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from flask import Blueprint, Response, current_app, jsonify, request

from bots.web.admin_password import AdminPassword
from core.commands import is_retrain_cancel
from core.conversation import (
    Cancel,
    Cancelled,
    ChannelNsfw,
    ConversationService,
    FromText,
    Imagine,
    Picked,
    Queued,
    Refused,
    RemixAsk,
    RemixPrompt,
    Reply,
    ResultShown,
    Retrain,
    RetrainCancel,
    RetrainCancelled,
    RetrainQueued,
    Show,
    ShowModel,
    ShowModels,
    Vary,
    status_line,
)
from core.datasets_chat import is_dataset_command
from core.errors import InputError, JobNotFound
from core.heartbeats import health_summary, job_notice
from core.ids import is_conversation_id, is_job_id, is_run_id
from core.job_client import QueueClient
from core.jobs import Conversation, JobRecord, JobStatus
from core.model_catalog import lora_names, parse_dfgan_models, parse_models
from core.nsfw import nsfw_notice
from core.prompt import check_text
from core.result_buttons import ResultButton, picked_buttons, read_button, result_buttons
from core.settings import Settings
from core.train_runs import RUN_PICTURES
from core.uploads import MAX_UPLOAD_BYTES, check_size

IMAGE_NAME = re.compile(r"pair|[a-z-]+-\d")
#: The largest ``multipart/form-data`` body: a picture and a little room for the text fields (JSON
#: bodies keep the app's small ``MAX_CONTENT_LENGTH``).
MAX_MULTIPART_BODY = MAX_UPLOAD_BYTES + 64 * 1024
#: HTTP status per refusal code (anything else is a 400).
ERROR_STATUS = {
    "rate_limited": 429,
    "queue_full": 503,
    "queue_unavailable": 503,
    "not_admin": 403,
    "not_your_job": 403,
    "not_found": 404,
    "no_run": 404,
    "unknown_run": 404,
    "already_finished": 409,
    "admin_password_unset": 403,
    "bad_admin_password": 403,
    "too_many_attempts": 429,
    "not_this_chat": 403,  # a button (or /show) naming another conversation's job
    "expired": 404,
    "no_pictures": 409,
}
api = Blueprint("api", __name__, url_prefix="/api")


@dataclass
class WebChat:
    """What the views share (``current_app.extensions["imaginebot"]``)."""

    settings: Settings
    queue: QueueClient
    service: ConversationService
    admin_password: AdminPassword


def chat() -> WebChat:
    """The web chat of the current app."""
    return current_app.extensions["imaginebot"]


def job_view(record: JobRecord, position: int | None, notice: str | None = None) -> dict[str, Any]:
    """The JSON shape of a job that the page and scripts read (``notice``: no worker can draw it yet)."""
    req = record.request
    done = record.status == JobStatus.DONE
    return {
        "id": record.id,
        "prompt": req.prompt,
        "status": record.status.value,
        "status_text": status_line(record, position, notice),
        "position": None if position is None else int(position),
        "waiting": getattr(position, "waiting", None),  # how many wait in all (with ``position``)
        "eta_s": getattr(position, "eta_s", None),  # about how long until it is drawn
        "notice": notice,
        "progress": record.progress.model_dump() if record.progress else None,
        "preview_url": preview_url(record),  # the engine's latest preview while it draws
        "seed": record.seed,
        "engines": req.engines,
        "steps": record.steps,
        "count": req.count,
        "size": record.size,
        "aspect": getattr(req, "aspect", None),  # --ar W:H (None: square)
        "width": getattr(record, "width", None) or record.size,  # the pictures' own size
        "height": getattr(record, "height", None) or record.size,
        "negative": req.negative_prompt,
        "image_input": req.image_key is not None,  # drawn from an uploaded picture
        "strength": req.strength,
        "model": req.model,
        "dfgan_model": req.dfgan_model,
        "loras": [{"name": lora.name, "weight": lora.weight} for lora in req.loras],
        "nsfw_notice": nsfw_notice(record.results),  # what happened to flagged pictures, and why
        "error": record.error,
        "delivered": record.delivered_at is not None,
        "created_at": record.created_at,
        "image_url": f"/api/jobs/{record.id}/pair.png" if done and record.pair_key else None,
        # U1..Un, V1..Vn, 🔄 / Info / Remix (core/result_buttons.py): POST their data to .../buttons
        "buttons": button_rows(result_buttons(record)) if done and record.pair_key else [],
        "images": [
            {
                "engine": r.engine,
                "version": r.version,
                "seconds": round(r.seconds, 3),
                "text_only": r.text_only,  # an engine that cannot start from a picture drew the text
                "nsfw": [d.model_dump() for d in r.nsfw],  # flagged pictures: index, action, reason
                "urls": [f"/api/jobs/{record.id}/images/{k.rsplit(':', 1)[1]}.png" for k in r.image_keys],
            }
            for r in record.results
        ],
    }


def button_rows(rows: list[list[ResultButton]]) -> list[list[dict[str, str]]]:
    """Result buttons as JSON: rows of ``{"label", "data"}``."""
    return [[{"label": b.label, "data": b.data} for b in row] for row in rows]


def picture_url(image_key: str) -> str:
    """The URL of a stored picture ``ib:img:<job>:<name>`` (:class:`core.store.ImageStore`)."""
    _, _, job_id, name = image_key.split(":", 3)
    return f"/api/jobs/{job_id}/images/{name}.png"


def picked_view(reply: Picked) -> dict[str, Any]:
    """U-n's answer: picture ``index`` of every engine, full size, with the buttons under it."""
    pictures = [
        {
            "engine": p.engine,
            "version": p.version,
            "url": picture_url(p.image_key),
            "width": p.width,
            "height": p.height,
            "spoiler": p.spoiler,
        }
        for p in reply.pictures
    ]
    buttons = button_rows(picked_buttons(reply.record, reply.index))
    return {
        "job_id": reply.record.id,
        "index": reply.index,
        "text": reply.text,
        "pictures": pictures,
        "buttons": buttons,
    }


def preview_url(record: JobRecord) -> str | None:
    """Where the running job's latest preview is (``bots/web/events.py``), None without one; the
    step in the query makes each new preview a new URL."""
    key = getattr(record.progress, "preview_key", None)
    if record.status != JobStatus.RUNNING or not key or record.progress is None:
        return None
    return f"/api/jobs/{record.id}/preview.png?step={record.progress.step}"


def refused(exc: InputError | Refused, status: int | None = None) -> tuple[Response, int]:
    """The JSON error answer (``status``: by default the code's, see :data:`ERROR_STATUS`)."""
    error = exc.error() if isinstance(exc, Refused) else exc
    response = jsonify(error.to_dict())
    if error.retry_after is not None:
        response.headers["Retry-After"] = str(int(error.retry_after + 0.999))
    return response, status or ERROR_STATUS.get(error.code, 400)


def not_found(what: str = "No such job.") -> tuple[Response, int]:
    """404 with code ``not_found``."""
    return jsonify({"error": what, "code": "not_found"}), 404


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


def request_fields() -> tuple[dict[str, Any], bytes | None]:
    """The request's fields and the picture sent as file ``image`` (None when none was): from a
    ``multipart/form-data`` body (up to :data:`MAX_MULTIPART_BODY`), else from the JSON object.
    Raises :class:`InputError` (a body too big for a picture: ``image_too_big``)."""
    if request.mimetype != "multipart/form-data":
        return json_object(), None
    if request.content_length is not None and request.content_length > MAX_MULTIPART_BODY:
        check_size(request.content_length)  # raises image_too_big, with the sizes
    request.max_content_length = MAX_MULTIPART_BODY
    data: dict[str, Any] = request.form.to_dict()
    upload = request.files.get("image")
    if upload is None and "image" in data:
        raise InputError("image_not_a_file", 'Send the picture as a file in the field "image", not as text.')
    return data, (upload.read() if upload is not None else None)


def prompt_text(data: dict[str, Any]) -> str:
    """The ``text`` field: present, a string, valid Unicode; cut to a sane length."""
    text = data.get("text")
    if text is None:
        raise InputError("missing_text", 'Say what to draw: the field "text" is missing or null.')
    if not isinstance(text, str):
        raise InputError("bad_text", 'The field "text" must be a string, e.g. "a red circle".')
    check_text(text)
    return text[: chat().settings.max_prompt_chars * 4]


def conversation_id(data: dict[str, Any]) -> str:
    """The ``conversation_id`` field, checked."""
    cid = str(data.get("conversation_id", ""))
    if not is_conversation_id(cid):
        raise InputError("bad_conversation", "conversation_id must be 8-64 letters, digits, - or _.")
    return cid


@api.get("/health")
def health() -> Response:
    """Live workers, "no worker is serving …" and children ``imaginebot up`` gave up on."""
    web = chat()
    web.queue.redis.ping()
    summary = health_summary(web.queue.redis, web.settings.default_engines)
    return jsonify({"ok": True, "engines": web.settings.enabled_engines, **summary})


@api.post("/imagine")
def imagine() -> tuple[Response, int]:
    """A prompt (with a picture, as multipart), or ``/models``, ``/nsfw``, ``/retrain`` or ``/dataset``
    text: one message of the conversation, kept in its history."""
    try:
        data, picture = request_fields()
        cid = conversation_id(data)
        text = prompt_text(data)
    except InputError as exc:
        return refused(exc, 400)
    web = chat()
    said: dict[str, Any] = {"role": "user", "text": text}
    if picture is not None:
        said["image"] = True
    web.queue.history.append("web", cid, said)
    if is_dataset_command(text):  # community datasets: bots/web/datasets_api.py
        from bots.web.datasets_api import dataset_answer

        return dataset_answer(data, cid, text, picture)
    reply = _say(web, data, cid, text, picture)
    return _render(web, cid, reply)


#: Chat-box commands that need the admin password beyond localhost (``/model`` as a whole word: not
#: ``/models``, which everyone may use).
ADMIN_COMMANDS = ("/retrain", "/nsfw")


def _say(web: WebChat, data: dict[str, Any], cid: str, text: str, picture: bytes | None = None) -> Reply:
    """What the service answers to ``text`` (with ``picture`` to draw from) from conversation ``cid``."""
    caller = web.service.caller(cid, Conversation(platform="web", chat_id=cid))
    command = text.strip().lower()
    if command == "/models":
        return web.service.handle(caller, ShowModels())
    word = command.split(maxsplit=1)[0] if command else ""
    if word == "/show":  # a job's result again, with its buttons
        return web.service.handle(caller, FromText(Show, text))
    admin = "/model" if word == "/model" else next((c for c in ADMIN_COMMANDS if command.startswith(c)), None)
    if admin is None:
        try:
            image_key = None if picture is None else web.service.uploads.put(picture)
        except InputError as exc:  # not a picture we take: its own code and message
            return Refused.of(exc)
        return web.service.handle(caller, FromText(Imagine, text, image_key=image_key))
    try:
        web.admin_password.check(data, cid, admin)
    except InputError as exc:
        return Refused.of(exc)
    if admin == "/nsfw":
        return web.service.handle(caller, FromText(ChannelNsfw, text))
    if admin == "/model":  # the models in use; list, promote or roll back versions
        return web.service.handle(caller, FromText(ShowModel, text))
    kind = RetrainCancel if is_retrain_cancel(text) else Retrain
    return web.service.handle(caller, FromText(kind, text))


def _render(web: WebChat, cid: str, reply: Reply) -> tuple[Response, int]:
    """The JSON answer to a message, and the bot's side of the history."""
    history = web.queue.history
    if isinstance(reply, Refused):
        history.append("web", cid, {"role": "bot", "text": reply.text, "code": reply.code})
        return refused(reply)
    if isinstance(reply, RetrainQueued | RetrainCancelled):
        # The train worker posts progress and the result into this conversation's history.
        history.append("web", cid, {"role": "bot", "text": reply.text, "run_id": reply.run.id})
        status = 202 if isinstance(reply, RetrainQueued) else 200
        return jsonify({"run": reply.run.model_dump(mode="json"), "message": reply.text}), status
    if isinstance(reply, Picked | ResultShown | RemixPrompt):
        return _render_result_action(web, cid, reply)
    if not isinstance(reply, Queued):  # an answer in words (/models, /nsfw, Info)
        history.append("web", cid, {"role": "bot", "text": reply.text})
        return jsonify({"message": reply.text}), 200
    # Point the user's message at its job so a reloaded page can show the job's state.
    history.append("web", cid, {"role": "job", "job_id": reply.record.id})
    return jsonify({"job": job_view(reply.record, reply.position, reply.notice)}), 202


def _render_result_action(
    web: WebChat, cid: str, reply: Picked | ResultShown | RemixPrompt
) -> tuple[Response, int]:
    """U-n's pictures and /show's result (both kept in the history), or Remix's prompt to edit."""
    if isinstance(reply, Picked):
        picked = picked_view(reply)
        web.queue.history.append("web", cid, {"role": "picked", "picked": picked})
        return jsonify({"picked": picked}), 200
    if isinstance(reply, ResultShown):
        web.queue.history.append("web", cid, {"role": "shown", "shown_job": reply.record.id})
        record, position = web.queue.status(reply.record.id)
        return jsonify({"shown": job_view(record, position), "message": reply.text}), 200
    remix = {"job_id": reply.record.id, "index": reply.index, "prompt": reply.prompt, "text": reply.text}
    return jsonify({"remix": remix}), 200


@api.post("/conversations/<cid>/buttons")
def press(cid: str) -> tuple[Response, int]:
    """A result button pressed in conversation ``cid``: ``{"data": "v:<job>:1"}`` (the data of a
    ``buttons`` entry), and for ✏️ Remix the edited prompt, ``{"data": "rx:<job>:0", "prompt": "..."}``
    (without it the answer is ``{"remix": {"prompt": ...}}``, the prompt to edit). The job must be
    this conversation's. Answers like ``POST /imagine``: ``{"job"}`` (V-n, 🔄, Remix, Upscale),
    ``{"picked"}`` (U-n), ``{"message"}`` (Info) or an error."""
    try:
        if not is_conversation_id(cid):
            raise InputError("bad_conversation", "conversation_id must be 8-64 letters, digits, - or _.")
        data = json_object()
        action = read_button(str(data.get("data", "")))
        if isinstance(action, RemixAsk) and data.get("prompt") is not None:
            action = Vary(action.job_id, action.index, prompt=prompt_text({"text": data["prompt"]}))
    except InputError as exc:
        return refused(exc, 400)
    web = chat()
    caller = web.service.caller(cid, Conversation(platform="web", chat_id=cid))
    return _render(web, cid, web.service.handle(caller, action))


@api.get("/models")
def models() -> Response:
    """The diffusion models and the DF-GAN models (``--model``) with what each is good at, and the
    LoRAs (``--lora``)."""
    settings = chat().settings
    listed = [{"name": m.name, "description": m.description} for m in parse_models(settings).values()]
    dfgan = [{"name": m.name, "description": m.description} for m in parse_dfgan_models(settings).values()]
    return jsonify({"models": listed, "dfgan_models": dfgan, "loras": lora_names(settings)})


@api.get("/jobs/<job_id>")
def job_status(job_id: str) -> tuple[Response, int]:
    """A job's state."""
    if not is_job_id(job_id):
        return not_found()
    queue = chat().queue
    try:
        record, position = queue.status(job_id)
    except JobNotFound:
        return not_found("No such job (it may have expired).")
    return jsonify({"job": job_view(record, position, job_notice(queue.redis, record))}), 200


@api.post("/jobs/<job_id>/cancel")
def cancel(job_id: str) -> tuple[Response, int]:
    """Cancel one of the conversation's jobs."""
    if not is_job_id(job_id):
        return not_found()
    try:
        data = json_object()
        cid = conversation_id(data)
    except InputError as exc:
        return refused(exc, 400 if exc.code == "bad_json" else 409)
    web = chat()
    caller = web.service.caller(cid, Conversation(platform="web", chat_id=cid))
    reply = web.service.handle(caller, Cancel(job_id))
    if isinstance(reply, Refused):
        return refused(reply, ERROR_STATUS.get(reply.code, 409))
    assert isinstance(reply, Cancelled), reply
    return jsonify({"job": job_view(reply.record, None)}), 200


@api.get("/jobs/<job_id>/pair.png")
def pair_png(job_id: str) -> Response | tuple[Response, int]:
    """A finished job's labelled pair image."""
    return image_png(job_id, "pair")


@api.get("/jobs/<job_id>/images/<name>.png")
def image_png(job_id: str, name: str) -> Response | tuple[Response, int]:
    """One image of a job."""
    if not is_job_id(job_id) or not IMAGE_NAME.fullmatch(name):
        return not_found("No such image.")
    return _png(job_id, name, "No such image (it may have expired).")


@api.get("/runs/<run_id>/<name>.png")
def run_png(run_id: str, name: str) -> Response | tuple[Response, int]:
    """A training run's picture (progress loss curves, the final curve, old vs new)."""
    if not is_run_id(run_id) or name not in RUN_PICTURES:
        return not_found("No such picture.")
    return _png(run_id, name, "No such picture (it may have expired).")


def _png(owner: str, name: str, expired: str) -> Response | tuple[Response, int]:
    images = chat().queue.images
    png = images.get(images.key(owner, name))
    if png is None:
        return not_found(expired)
    return Response(png, mimetype="image/png", headers={"Cache-Control": "private, max-age=86400"})


@api.get("/conversations/<cid>")
def conversation(cid: str) -> tuple[Response, int]:
    """The conversation's history, with each job's current state."""
    if not is_conversation_id(cid):
        return jsonify({"error": "Bad conversation id.", "code": "bad_conversation"}), 400
    queue = chat().queue
    messages = [_message(queue, event) for event in queue.history.read("web", cid)]
    return jsonify({"messages": [m for m in messages if m is not None]}), 200


def _message(queue: QueueClient, event: dict[str, Any]) -> dict[str, Any] | None:
    """One history event as the page shows it (None: not shown)."""
    if event.get("role") in ("job", "shown"):  # a job, or /show's result again
        try:
            record, position = queue.status(str(event.get("job_id") or event.get("shown_job")))
        except JobNotFound:
            return {"role": "bot", "text": "This job has expired.", "ts": event["ts"]}
        return {"role": event["role"], "ts": event["ts"], "job": job_view(record, position)}
    if event.get("role") == "picked" and isinstance(event.get("picked"), dict):
        return {"role": "picked", "ts": event["ts"], "picked": event["picked"]}
    if event.get("role") not in ("user", "bot") or "text" not in event or "job_id" in event:
        return None
    message = {"role": event["role"], "text": event["text"], "ts": event["ts"]}
    if event.get("image") is True:
        message["image"] = True  # the user sent a picture with the prompt
    if "code" in event:
        message["code"] = event["code"]  # lets the page style errors apart from notices
    if "run_id" in event:
        message["run_id"] = event["run_id"]
    if str(event.get("image_url", "")).startswith("/api/runs/"):
        message["image_url"] = event["image_url"]  # a training run's picture
    return message
