"""A small fake Telegram Bot API server (aiohttp, in a background thread) for the bot's tests.

It serves the methods the bot and its sender use, records every call (parameters and uploaded
files), hands out updates that a test injects through ``getUpdates`` (long-poll with a short wait),
and can answer the next call of a method with an error (e.g. a 429 "retry after 2").

Like Telegram, it refuses a photo it could not post: over 10 MB (``PHOTO_SAVE_FILE_INVALID``), width +
height over 10000 or a side ratio over 20 (``PHOTO_INVALID_DIMENSIONS``), in ``sendPhoto``,
``sendMediaGroup`` and ``editMessageMedia``; and a document over 50 MB (413). A posted photo's message
carries its ``photo`` sizes and ``reply_markup``, as Telegram's does, so a test can reply to it.

Files users sent: :meth:`FakeTelegram.photo` keeps a picture and returns its ``PhotoSize``;
``getFile`` answers with its ``file_path`` and ``GET /file/bot<token>/<file_path>`` serves it (each
download recorded in :attr:`FakeTelegram.downloads`). :func:`photo_message` builds the update.

:attr:`FakeTelegram.faults` (a :class:`Faults`) injects random faults into the sending methods, as a
flaky Bot API would: 429 with ``retry_after``, 5xx, a stall past the client's timeout (the call *is*
processed, the answer comes late), and a dropped connection (after or before processing). Each
:class:`Call` says whether the fake processed it (:attr:`Call.processed`) and which fault it got.
"""

from __future__ import annotations

import asyncio
import io
import itertools
import json
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from PIL import Image

BOT_USER = {"id": 123, "is_bot": True, "first_name": "imaginebot", "username": "imaginebot_test_bot"}
ID_FIELDS = ("chat_id", "message_thread_id", "message_id", "reply_to_message_id")
JSON_FIELDS = ("reply_parameters", "reply_markup", "media", "allowed_updates", "commands")
TRUE_METHODS = ("setWebhook", "deleteWebhook", "setMyCommands", "answerCallbackQuery", "deleteMessage")
EDIT_METHODS = ("editMessageText", "editMessageMedia", "editMessageCaption", "editMessageReplyMarkup")
# Telegram's limits on a photo, and on any file a bot uploads.
PHOTO_MAX_BYTES = 10 * 1024 * 1024
PHOTO_MAX_SIDES = 10_000
PHOTO_MAX_RATIO = 20
UPLOAD_MAX_BYTES = 50 * 1024 * 1024
PHOTO_TOO_BIG = "Bad Request: PHOTO_SAVE_FILE_INVALID"
PHOTO_BAD_DIMENSIONS = "Bad Request: PHOTO_INVALID_DIMENSIONS"
IMAGE_FAILED = "Bad Request: IMAGE_PROCESS_FAILED"


@dataclass
class Faults:
    """Random faults for the methods in :attr:`methods`; each rate is a probability per call.

    ``stall`` processes the call, then holds the answer ``stall_s`` seconds (past the client's read
    timeout); ``drop`` processes it, then closes the connection without an answer; ``drop_before``
    closes the connection without processing. ``seed`` makes a run repeatable; ``limit`` caps the
    number of faults.
    """

    methods: tuple[str, ...] = ("sendPhoto", "sendMessage", "sendDocument")
    rate_429: float = 0.0
    retry_after: int = 1
    rate_500: float = 0.0
    rate_stall: float = 0.0
    stall_s: float = 20.0
    rate_drop: float = 0.0
    rate_drop_before: float = 0.0
    seed: int = 0
    limit: int | None = None  # at most this many faults in all, then none
    _random: random.Random = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._random = random.Random(self.seed)

    def draw(self, method: str) -> str | None:
        """The fault for one call of ``method``: ``429``, ``500``, ``stall``, ``drop``,
        ``drop_before`` or None."""
        if method not in self.methods or self.limit == 0:
            return None
        x = self._random.random()
        for name, rate in (
            ("429", self.rate_429),
            ("500", self.rate_500),
            ("stall", self.rate_stall),
            ("drop", self.rate_drop),
            ("drop_before", self.rate_drop_before),
        ):
            if x < rate:
                if self.limit is not None:
                    self.limit -= 1
                return name
            x -= rate
        return None


def drop_connection(request: web.Request) -> None:
    """Close ``request``'s connection without an answer (the client sees it dropped)."""
    if request.transport is not None:
        request.transport.close()


def serve_file(
    name: str, files: dict[str, bytes], downloads: list[str], lock: threading.Lock
) -> web.Response:
    """The content of ``files[name]`` (404 when there is none), the download noted in ``downloads``."""
    with lock:
        downloads.append(name)
        data = files.get(name)
    if data is None:
        return web.Response(status=404, text="Not Found")
    return web.Response(body=data, content_type="application/octet-stream")


@dataclass
class Call:
    """One request the fake received."""

    method: str
    params: dict[str, Any]
    files: dict[str, bytes] = field(default_factory=dict)
    at: float = field(default_factory=time.monotonic)
    status: int = 200
    result: Any = None
    fault: str | None = None

    @property
    def processed(self) -> bool:
        """Whether the fake carried the call out (whatever the client got back)."""
        return self.status == 200 and self.fault != "drop_before"

    @property
    def ok(self) -> bool:
        """Whether the fake answered it with success."""
        return self.status == 200

    @property
    def reply_to(self) -> int | None:
        """The message this one replies to (``reply_parameters`` or the older field)."""
        if isinstance(self.params.get("reply_parameters"), dict):
            return self.params["reply_parameters"].get("message_id")
        return self.params.get("reply_to_message_id")

    @property
    def callback_data(self) -> list[str]:
        """Every ``callback_data`` of the inline keyboard sent with this call."""
        markup = self.params.get("reply_markup") or {}
        return [b["callback_data"] for row in markup.get("inline_keyboard", []) for b in row]


class FakeTelegram:
    """Start with :meth:`start`, point the bot at :attr:`url`, stop with :meth:`stop`."""

    def __init__(self, token: str = "123:TEST") -> None:
        self.token = token
        self.calls: list[Call] = []
        self.url = ""
        self._lock = threading.Lock()
        self._updates: list[dict[str, Any]] = []
        self._update_ids = itertools.count(1)
        self._message_ids = itertools.count(5000)
        self._failures: list[tuple[str, int | None, int, dict[str, Any]]] = []
        self.files: dict[str, bytes] = {}  # file_path -> content
        self.downloads: list[str] = []  # file paths fetched, in order
        self._file_paths: dict[str, tuple[str, int]] = {}  # file_id -> (file_path, size)
        self._file_ids = itertools.count(1)
        self.faults: Faults | None = None
        self.stalling = 0  # calls processed and now holding back their answer
        self._loop = asyncio.new_event_loop()
        self._new_update: asyncio.Event | None = None
        self._stopping = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self._thread = threading.Thread(target=self._loop.run_forever, name="fake-telegram", daemon=True)

    # --- life --------------------------------------------------------------------------------
    def start(self) -> FakeTelegram:
        """Serve on a free port of 127.0.0.1."""
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._serve(), self._loop).result(timeout=10)
        return self

    async def _serve(self) -> None:
        self._new_update = asyncio.Event()
        self._stopping = asyncio.Event()  # ends stalls at once when the fake stops
        app = web.Application(client_max_size=60 * 1024 * 1024)
        app.router.add_post("/bot{token}/{method}", self._handle)
        app.router.add_get("/file/bot{token}/{path:.+}", self._download)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}"

    def stop(self) -> None:
        """Stop serving and end the thread."""
        if self._runner is not None:
            self._loop.call_soon_threadsafe(self._stopping.set)
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)

    # --- what tests drive ---------------------------------------------------------------------
    def push_update(self, update: dict[str, Any]) -> int:
        """Queue ``update`` (without ``update_id``) for the bot's next ``getUpdates``; returns its id."""
        update_id = next(self._update_ids)
        with self._lock:
            self._updates.append({"update_id": update_id, **update})
        if self._new_update is not None:
            self._loop.call_soon_threadsafe(self._new_update.set)
        return update_id

    def photo(self, data: bytes, width: int, height: int, file_size: int | None = None) -> dict[str, Any]:
        """Keep ``data`` as a photo a user sent; its ``PhotoSize`` (``file_size``: what Telegram
        announces, the real size unless given)."""
        number = next(self._file_ids)
        file_id, path = f"photo-{number}", f"photos/file_{number}.jpg"
        size = len(data) if file_size is None else file_size
        with self._lock:
            self.files[path] = data
            self._file_paths[file_id] = (path, size)
        return {
            "file_id": file_id,
            "file_unique_id": f"u{number}",
            "width": width,
            "height": height,
            "file_size": size,
        }

    def path_of(self, photo: dict[str, Any]) -> str:
        """The ``file_path`` of a photo from :meth:`photo` (what its download asks for)."""
        with self._lock:
            return self._file_paths[photo["file_id"]][0]

    def fail_next(self, method: str, status: int, body: dict[str, Any], chat_id: int | None = None) -> None:
        """Answer the next ``method`` call (to ``chat_id``, if given) with HTTP ``status`` and ``body``."""
        with self._lock:
            self._failures.append((method, chat_id, status, body))

    def find(self, predicate: Callable[[Call], bool]) -> list[Call]:
        """Calls so far that match ``predicate``, in order."""
        with self._lock:
            return [c for c in self.calls if predicate(c)]

    def wait_for(self, predicate: Callable[[Call], bool], timeout_s: float = 60.0) -> Call:
        """The first call matching ``predicate``, waiting up to ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            found = self.find(predicate)
            if found:
                return found[0]
            time.sleep(0.05)
        with self._lock:
            seen = [(c.method, c.params.get("chat_id"), c.params.get("text")) for c in self.calls[-15:]]
        raise AssertionError(f"no matching call within {timeout_s} s; last calls: {seen}")

    # --- the API ------------------------------------------------------------------------------
    async def _handle(self, request: web.Request) -> web.Response:
        if request.match_info["token"] != self.token:
            return web.json_response(
                {"ok": False, "error_code": 401, "description": "Unauthorized"}, status=401
            )
        method = request.match_info["method"]
        params, files = await self._read(request)
        if method == "getUpdates":
            return web.json_response({"ok": True, "result": await self._get_updates(params)})
        call = Call(method, params, files)
        with self._lock:
            failure = next(
                (f for f in self._failures if f[0] == method and f[1] in (None, params.get("chat_id"))), None
            )
            if failure is not None:
                self._failures.remove(failure)
                call.status = failure[2]
            elif self.faults is not None:
                call.fault = self.faults.draw(method)
            self.calls.append(call)
        if failure is not None:
            return web.json_response(failure[3], status=failure[2])
        injected = self._injected(call) or self._refused(call)
        if injected is not None:
            return injected
        if call.fault == "drop_before":
            call.status = 499
            drop_connection(request)
            return web.Response(status=499)
        result = self._answer(method, params, files)
        if result is None:
            call.status = 404
            return web.json_response({"ok": False, "error_code": 404, "description": "Not Found"}, status=404)
        call.result = result
        if call.fault == "drop":
            drop_connection(request)
            return web.Response(status=499)
        if call.fault == "stall":
            assert self.faults is not None
            self.stalling += 1
            try:
                await asyncio.wait_for(self._stopping.wait(), self.faults.stall_s)
            except TimeoutError:
                pass
            finally:
                self.stalling -= 1
        return web.json_response({"ok": True, "result": result})

    def _injected(self, call: Call) -> web.Response | None:
        """The error answer of an injected 429 or 5xx (the call is not processed)."""
        if call.fault == "429":
            assert self.faults is not None
            wait = self.faults.retry_after
            call.status = 429
            body = {
                "ok": False,
                "error_code": 429,
                "description": f"Too Many Requests: retry after {wait}",
                "parameters": {"retry_after": wait},
            }
            return web.json_response(body, status=429)
        if call.fault == "500":
            call.status = 500
            body = {"ok": False, "error_code": 500, "description": "Internal Server Error"}
            return web.json_response(body, status=500)
        return None

    def _refused(self, call: Call) -> web.Response | None:
        """Telegram's 400 for a photo it cannot post (too heavy, too large, too narrow), or its 413
        for an upload over 50 MB; the call is not processed."""
        for data in call.files.values():
            if len(data) > UPLOAD_MAX_BYTES:
                call.status = 413
                body = {"ok": False, "error_code": 413, "description": "Request Entity Too Large"}
                return web.json_response(body, status=413)
        for data in photo_uploads(call.method, call.params, call.files):
            problem = photo_problem(data)
            if problem is not None:
                call.status = 400
                return web.json_response({"ok": False, "error_code": 400, "description": problem}, status=400)
        return None

    @staticmethod
    async def _read(request: web.Request) -> tuple[dict[str, Any], dict[str, bytes]]:
        params: dict[str, Any] = {}
        files: dict[str, bytes] = {}
        if request.content_type == "application/json":
            params = await request.json()
        elif request.can_read_body:
            form = await request.post()
            for name, value in form.items():
                if isinstance(value, web.FileField):
                    files[name] = value.file.read()
                else:
                    params[name] = value
        for name in ID_FIELDS:
            if isinstance(params.get(name), str):
                params[name] = int(params[name])
        for name in JSON_FIELDS:
            if isinstance(params.get(name), str):
                params[name] = json.loads(params[name])
        return params, files

    async def _get_updates(self, params: dict[str, Any]) -> list[dict[str, Any]]:
        offset = int(params.get("offset") or 0)
        wait_s = min(float(params.get("timeout") or 0), 1.0)
        deadline = time.monotonic() + wait_s
        assert self._new_update is not None
        while True:
            with self._lock:
                self._updates = [u for u in self._updates if u["update_id"] >= offset]
                pending = list(self._updates)
                self._new_update.clear()
            remaining = deadline - time.monotonic()
            if pending or remaining <= 0:
                return pending
            try:
                await asyncio.wait_for(self._new_update.wait(), remaining)
            except TimeoutError:
                pass

    async def _download(self, request: web.Request) -> web.Response:
        """A file's content, as the Bot API's file URL serves it."""
        if request.match_info["token"] != self.token:
            return web.Response(status=401, text="Unauthorized")
        return serve_file(request.match_info["path"], self.files, self.downloads, self._lock)

    def _answer(self, method: str, params: dict[str, Any], files: dict[str, bytes]) -> Any:
        if method == "getMe":
            return BOT_USER
        if method == "getFile":
            with self._lock:
                known = self._file_paths.get(str(params.get("file_id")))
            if known is None:
                return None
            path, size = known
            return {"file_id": params["file_id"], "file_unique_id": "u", "file_size": size, "file_path": path}
        if method in TRUE_METHODS:
            return True
        if method in ("sendMessage", "sendPhoto", "sendDocument"):
            message = self._message(params, text=params.get("text"), caption=params.get("caption"))
            return with_media(message, method, params.get("photo") or params.get("document"), files)
        if method in EDIT_METHODS:
            message = self._message(params, text=params.get("text"), caption=params.get("caption"))
            message["message_id"] = params["message_id"]
            media = params.get("media") if isinstance(params.get("media"), dict) else {}
            if media:
                message["caption"] = media.get("caption")
            return with_media(message, f"send{str(media.get('type', '')).title()}", media.get("media"), files)
        if method == "sendMediaGroup":
            return [
                with_media(
                    self._message(params, caption=item.get("caption")),
                    f"send{str(item.get('type', '')).title()}",
                    item.get("media"),
                    files,
                )
                for item in params.get("media", [])
            ]
        return None

    def _message(self, params: dict[str, Any], text: str | None = None, caption: str | None = None) -> dict:
        chat_id = params["chat_id"]
        message: dict[str, Any] = {
            "message_id": next(self._message_ids),
            "date": int(time.time()),
            "chat": {"id": chat_id, "type": "private" if chat_id > 0 else "supergroup"},
            "from": BOT_USER,
        }
        if params.get("message_thread_id"):
            message.update(message_thread_id=params["message_thread_id"], is_topic_message=True)
        if text is not None:
            message["text"] = text
        if caption is not None:
            message["caption"] = caption
        if isinstance(params.get("reply_markup"), dict) and "inline_keyboard" in params["reply_markup"]:
            message["reply_markup"] = params["reply_markup"]
        return message


def uploaded(value: Any, files: dict[str, bytes]) -> bytes | None:
    """The bytes a media field names: a file field of the request (``attach://name`` or the field
    itself), None for a file id or URL."""
    if isinstance(value, str) and value.startswith("attach://"):
        return files.get(value.removeprefix("attach://"))
    return None


def photo_uploads(method: str, params: dict[str, Any], files: dict[str, bytes]) -> list[bytes]:
    """Every photo ``method`` uploads: ``sendPhoto``'s file, a media group's or ``editMessageMedia``'s
    photos."""
    if method == "sendPhoto":
        return [files["photo"]] if "photo" in files else []
    media = params.get("media")
    items = media if isinstance(media, list) else [media] if isinstance(media, dict) else []
    found = [uploaded(item.get("media"), files) for item in items if item.get("type") == "photo"]
    return [data for data in found if data is not None]


def photo_problem(data: bytes) -> str | None:
    """Telegram's error text for a photo it refuses, None when it may be posted."""
    if len(data) > PHOTO_MAX_BYTES:
        return PHOTO_TOO_BIG
    size = image_size(data)
    if size is None:
        return IMAGE_FAILED
    width, height = size
    if width + height > PHOTO_MAX_SIDES or max(width, height) > PHOTO_MAX_RATIO * min(width, height):
        return PHOTO_BAD_DIMENSIONS
    return None


def image_size(data: bytes) -> tuple[int, int] | None:
    """``(width, height)`` of an image file, None when it is not one."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            return image.size
    except (OSError, ValueError):
        return None


def with_media(message: dict[str, Any], method: str, media: Any, files: dict[str, bytes]) -> dict[str, Any]:
    """``message`` with the ``photo`` sizes or ``document`` that ``method`` posted, as Telegram
    answers (uploaded bytes measured; a file id kept as is)."""
    field_name = {"sendPhoto": "photo", "sendDocument": "document"}.get(method)
    if field_name is None:
        return message
    data = files.get(field_name) if media is None or not isinstance(media, str) else uploaded(media, files)
    unique = f"posted{message['message_id']}"
    if field_name == "document":
        size = len(data) if data is not None else 0
        message["document"] = {"file_id": unique, "file_unique_id": unique, "file_size": size}
        return message
    width, height = (image_size(data) if data is not None else None) or (1, 1)
    size = len(data) if data is not None else 0
    message["photo"] = [
        {"file_id": unique, "file_unique_id": unique, "width": width, "height": height, "file_size": size}
    ]
    return message


def user_message(
    chat_id: int,
    user_id: int,
    text: str,
    message_id: int,
    thread_id: int | None = None,
    chat_type: str = "private",
    reply_to: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A ``message`` update as Telegram sends it (with the bot_command entity for ``/commands``);
    ``reply_to``: the message it replies to."""
    message = _message_json(chat_id, user_id, message_id, thread_id, chat_type)
    message["text"] = text
    if text.startswith("/"):
        message["entities"] = [_command_entity(text)]
    if reply_to is not None:
        message["reply_to_message"] = reply_to
    return {"message": message}


def photo_message(
    chat_id: int,
    user_id: int,
    caption: str | None,
    message_id: int,
    sizes: list[dict[str, Any]],
    thread_id: int | None = None,
    chat_type: str = "private",
) -> dict[str, Any]:
    """A ``message`` update with a photo (its ``sizes``, from :meth:`FakeTelegram.photo`) and caption;
    one size with a ``mime_type`` is a file sent as a document instead."""
    message = _message_json(chat_id, user_id, message_id, thread_id, chat_type)
    if len(sizes) == 1 and "mime_type" in sizes[0]:
        (file,) = sizes
        message["document"] = {k: v for k, v in file.items() if k not in ("width", "height")}
    else:
        message["photo"] = sizes
    if caption is not None:
        message["caption"] = caption
        if caption.startswith("/"):
            message["caption_entities"] = [_command_entity(caption)]
    return {"message": message}


def _message_json(
    chat_id: int, user_id: int, message_id: int, thread_id: int | None, chat_type: str
) -> dict[str, Any]:
    message: dict[str, Any] = {
        "message_id": message_id,
        "date": int(time.time()),
        "chat": {"id": chat_id, "type": chat_type},
        "from": {"id": user_id, "is_bot": False, "first_name": f"user{user_id}"},
    }
    if chat_type == "supergroup":
        message["chat"].update(title="test group", is_forum=thread_id is not None)
    if thread_id is not None:
        message.update(message_thread_id=thread_id, is_topic_message=True)
    return message


def _command_entity(text: str) -> dict[str, Any]:
    return {"type": "bot_command", "offset": 0, "length": len(text.split()[0])}


def button_press(user_id: int, data: str, message: dict[str, Any], query_id: str) -> dict[str, Any]:
    """A ``callback_query`` update: ``user_id`` pressed the button ``data`` under ``message``."""
    return {
        "callback_query": {
            "id": query_id,
            "from": {"id": user_id, "is_bot": False, "first_name": f"user{user_id}"},
            "chat_instance": "test",
            "data": data,
            "message": message,
        }
    }
