"""The web chat's ``/dataset`` commands (community datasets, :mod:`core.datasets_chat`).

``POST /api/datasets`` takes ``/dataset …`` text like the chat box does, as JSON
``{"conversation_id", "text", "admin_password"?, "image_key"?}`` or as ``multipart/form-data`` with
the same fields and the picture as file ``image`` (checked by :func:`core.uploads.check_upload`,
stored by key, never a path). Admins only (beyond localhost also the admin password, as ``/retrain``).

- add → 201 ``{"dataset", "item": {"id", "caption"}, "count", "message"}``
- list → 200 ``{"datasets": [{"name", "count"}], "message"}``
- show → 200 ``{"dataset", "count", "items": [...], "sheet": "data:image/png;base64,…", "message"}``
- remove → 200 ``{"dataset", "item", "left", "message"}``
- refused → 4xx ``{"error", "code"}``, as every other view

The answers go into the conversation's history like any bot message.
"""

from __future__ import annotations

import base64
from typing import Any

from flask import Blueprint, Response, jsonify

from bots.web.api import chat, conversation_id, refused, request_fields
from core.conversation import Refused
from core.datasets_chat import (
    NOT_ADMIN_DATASET,
    DatasetAdded,
    DatasetCommand,
    DatasetItemRemoved,
    DatasetReply,
    DatasetShown,
    DatasetsListed,
)
from core.errors import InputError
from core.jobs import Conversation

datasets_api = Blueprint("datasets_api", __name__, url_prefix="/api")


@datasets_api.post("/datasets")
def dataset_command() -> tuple[Response, int]:
    """``/dataset add|list|show|remove …`` from an admin's conversation (see the module's text)."""
    try:
        data, picture = request_fields()
        cid = conversation_id(data)
        text = data.get("text")
        if not isinstance(text, str):
            raise InputError("missing_text", 'Give the command as "text", e.g. "/dataset list".')
    except InputError as exc:
        return refused(exc)
    chat().queue.history.append("web", cid, {"role": "user", "text": text})
    return dataset_answer(data, cid, text, picture)


def dataset_answer(data: dict[str, Any], cid: str, text: str, picture: bytes | None) -> tuple[Response, int]:
    """The answer to ``/dataset …`` ``text`` (``picture``: one sent with it) from conversation ``cid``
    (also what the chat box's ``POST /api/imagine`` answers to such text); kept in its history."""
    web = chat()
    caller = web.service.caller(cid, Conversation(platform="web", chat_id=cid))
    try:
        if not caller.is_admin:
            raise InputError("not_admin", NOT_ADMIN_DATASET)
        web.admin_password.check(data, cid, "/dataset")
        image_key = data.get("image_key") if isinstance(data.get("image_key"), str) else None
        if picture is not None:
            image_key = web.service.uploads.put(picture)
        reply = web.service.handle(caller, DatasetCommand(text, image_key))
    except InputError as exc:
        reply = Refused.of(exc)
    web.queue.history.append("web", cid, {"role": "bot", "text": reply.text, **_code(reply)})
    if isinstance(reply, Refused):
        return refused(reply)
    return _rendered(reply)


def _code(reply: object) -> dict[str, str]:
    return {"code": reply.code} if isinstance(reply, Refused) else {}


def _rendered(reply: DatasetReply) -> tuple[Response, int]:
    body: dict[str, Any] = {"message": reply.text}
    if isinstance(reply, DatasetAdded):
        item = {"id": reply.item.id, "caption": reply.item.caption}
        return jsonify({**body, "dataset": reply.name, "item": item, "count": reply.count}), 201
    if isinstance(reply, DatasetsListed):
        body["datasets"] = [{"name": name, "count": count} for name, count in reply.datasets]
    elif isinstance(reply, DatasetShown):
        sheet = "data:image/png;base64," + base64.b64encode(reply.sheet_png).decode("ascii")
        items = [{"id": i.id, "caption": i.caption} for i in reply.items]
        body.update(dataset=reply.name, count=reply.count, items=items, sheet=sheet)
    elif isinstance(reply, DatasetItemRemoved):
        item = {"id": reply.item.id, "caption": reply.item.caption}
        body.update(dataset=reply.name, item=item, left=reply.left)
    return jsonify(body), 200
