"""A small fake Discord on 127.0.0.1: enough REST and gateway for discord.py and our sender.

REST (under ``/api/v10``): ``GET /gateway/bot``, ``GET /users/@me``, ``GET /oauth2/applications/@me``,
``PUT /applications/{app}/commands``, ``POST /interactions/{id}/{token}/callback``,
``POST /webhooks/{app}/{token}`` (follow-ups), ``PATCH|GET /webhooks/{app}/{token}/messages/@original``,
``POST /channels/{id}/messages``, ``POST /channels/{id}/messages/{msg}/threads`` (answered with
:attr:`FakeDiscord.refuse_threads` when set). JSON and multipart (``payload_json`` + ``files[n]``)
bodies are both recorded in :attr:`FakeDiscord.calls`.

Gateway (``/gateway``, plain JSON text frames): HELLO (op 10) on connect, HEARTBEAT_ACK (op 11) for each
heartbeat (op 1), READY (op 0) after IDENTIFY (op 2); :meth:`FakeDiscord.dispatch` sends any event.

Upload limit: every interaction carries ``attachment_size_limit`` (:attr:`FakeDiscord.attachment_size_limit`,
10 MiB as Discord's default), and a post or edit with a file over it is answered 413 (code 40005,
"Request entity too large"), as Discord does.

Modals: a modal callback (type 9) is recorded like any callback; :meth:`FakeDiscord.modal_submit` sends
the person's answer (a MODAL_SUBMIT interaction, type 5, with text inputs in labels or action rows).

Attachments: :meth:`FakeDiscord.attachment` keeps a file and returns its attachment object (its
``url`` is served by ``GET /attachments/{id}/{filename}``, each download recorded in
:attr:`FakeDiscord.downloads`); pass it to :meth:`FakeDiscord.slash_command` as an option value and it
goes into the interaction's ``resolved`` data, as Discord sends an attachment option.

Fault injection: :attr:`FakeDiscord.faults` (a :class:`tests.helpers.fake_telegram.Faults` whose methods are
``"post"``) gives posts (follow-ups and channel messages) a random 429 with ``retry_after``, a 500, a
stall past the client's timeout (processed, answered late), or a dropped connection. A channel post
with ``enforce_nonce`` and a nonce seen before returns the first message instead of a new one, as
Discord does; :meth:`FakeDiscord.posted` counts the messages really created.

The server runs in its own thread and event loop; every public method is safe to call from tests.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSMsgType, web

from tests.helpers.fake_telegram import Faults, drop_connection, serve_file

BOT_ID = "900000000000000001"
APP_ID = "900000000000000002"
GUILD_ID = "900000000000000003"
OWNER_ID = "900000000000000004"
TIMESTAMP = "2026-01-01T00:00:00.000000+00:00"
_ids = itertools.count(910_000_000_000_000_000)


def snowflake() -> str:
    """A fresh, unique Discord-style id."""
    return str(next(_ids))


def user_json(user_id: str, name: str, bot: bool = False) -> dict[str, Any]:
    """A Discord user object."""
    return {
        "id": user_id,
        "username": name,
        "discriminator": "0",
        "global_name": name,
        "avatar": None,
        "bot": bot,
        "public_flags": 0,
        "flags": 0,
    }


def text_channel_json(channel_id: str, nsfw: bool = False) -> dict[str, Any]:
    """A guild text channel object (``nsfw``: marked NSFW by the server's admins)."""
    return {
        "id": channel_id,
        "type": 0,
        "guild_id": GUILD_ID,
        "name": "general",
        "position": 0,
        "permission_overwrites": [],
        "nsfw": nsfw,
        "parent_id": None,
        "topic": None,
        "last_message_id": None,
        "rate_limit_per_user": 0,
    }


def thread_json(thread_id: str, parent_id: str) -> dict[str, Any]:
    """A public thread object inside ``parent_id``."""
    return {
        "id": thread_id,
        "type": 11,
        "guild_id": GUILD_ID,
        "parent_id": parent_id,
        "owner_id": OWNER_ID,
        "name": "pictures",
        "last_message_id": None,
        "rate_limit_per_user": 0,
        "message_count": 0,
        "member_count": 1,
        "flags": 0,
        "thread_metadata": {
            "archived": False,
            "auto_archive_duration": 1440,
            "archive_timestamp": TIMESTAMP,
            "locked": False,
        },
    }


@dataclass
class Call:
    """One REST request the fake received."""

    method: str
    path: str
    headers: dict[str, str]
    query: dict[str, str]
    json: Any = None
    files: dict[str, bytes] = field(default_factory=dict)
    status: int = 200
    response: Any = None  # the JSON body the fake answered with
    at: float = field(default_factory=time.monotonic)
    fault: str | None = None
    created: bool = False  # a new message was created by this call (a post, not a nonce repeat)


class FakeDiscord:
    """Start with :meth:`start`, stop with :meth:`stop`; ``api_base`` goes into the settings."""

    def __init__(self) -> None:
        self.calls: list[Call] = []
        self.interactions_sent: list[dict[str, Any]] = []
        self.rate_limit_followups = 0  # answer this many follow-ups/channel posts with 429
        self.rate_limit_header_only = False  # such a 429 says how long in the Retry-After header only
        self.expired_tokens: set[str] = set()  # webhook tokens answered with 404 Unknown Webhook
        self.refuse_threads: int | None = None  # answer thread creation with this status (403, 400)
        self.faults: Faults | None = None  # random faults on posts (methods=("post",))
        self.attachment_size_limit = 10 * 1024 * 1024  # per file; announced in every interaction
        self._nonces: dict[tuple[str, str], dict[str, Any]] = {}  # (channel, nonce) -> message
        self.files: dict[str, bytes] = {}  # attachment id -> content
        self.downloads: list[str] = []  # attachment ids fetched, in order
        self.identified = threading.Event()
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self._ws: web.WebSocketResponse | None = None
        self._seq = 0
        self.port = 0

    # --- lifecycle ------------------------------------------------------------------------------
    @property
    def api_base(self) -> str:
        """What ``IMAGINEBOT_DISCORD_API_BASE`` should be."""
        return f"http://127.0.0.1:{self.port}/api/v10"

    def start(self) -> FakeDiscord:
        """Serve on a free port in a background thread."""
        started = threading.Event()

        def serve() -> None:
            self._loop = asyncio.new_event_loop()
            asyncio.set_event_loop(self._loop)
            self._loop.run_until_complete(self._start_server())
            started.set()
            self._loop.run_forever()
            self._loop.close()

        self._thread = threading.Thread(target=serve, name="fake-discord", daemon=True)
        self._thread.start()
        if not started.wait(10):
            raise RuntimeError("fake Discord did not start")
        return self

    def stop(self) -> None:
        """Close the gateway and the server, end the thread."""
        if self._loop is None:
            return
        asyncio.run_coroutine_threadsafe(self._stop_server(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(10)

    async def _start_server(self) -> None:
        self._stopping = asyncio.Event()  # ends stalls at once when the fake stops
        app = web.Application(client_max_size=32 * 1024 * 1024)
        app.router.add_get("/gateway", self._gateway)
        app.router.add_get("/attachments/{id}/{filename}", self._download)
        app.router.add_route("*", "/api/v10/{tail:.*}", self._rest)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def _stop_server(self) -> None:
        self._stopping.set()
        if self._ws is not None and not self._ws.closed:
            await self._ws.close()
        if self._runner is not None:
            await self._runner.cleanup()

    # --- what tests use -------------------------------------------------------------------------
    def calls_to(self, method: str, prefix: str) -> list[Call]:
        """Recorded calls with ``method`` whose path (after ``/api/v10``) starts with ``prefix``."""
        with self._lock:
            return [c for c in self.calls if c.method == method and c.path.startswith(prefix)]

    def wait_for(self, predicate: Callable[[], Any], timeout_s: float = 30.0, what: str = "it") -> Any:
        """Poll ``predicate`` until it returns something truthy; fail after ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            value = predicate()
            if value:
                return value
            time.sleep(0.05)
        raise AssertionError(f"fake Discord: waited {timeout_s} s for {what}; calls: {self.summary()}")

    def answer_to(self, interaction: dict[str, Any], timeout_s: float = 20.0) -> Call:
        """The bot's answer to ``interaction``: its callback, or (when it deferred) the edit of the
        original response."""
        callback = f"/interactions/{interaction['id']}/{interaction['token']}/callback"
        edit = f"/webhooks/{APP_ID}/{interaction['token']}/messages/@original"

        def found() -> Call | None:
            [call] = self.wait_for(lambda: self.calls_to("POST", callback), timeout_s=10, what=callback)
            if call.json and call.json.get("type") == 5:
                edits = self.calls_to("PATCH", edit)
                return edits[0] if edits else None
            return call

        return self.wait_for(found, timeout_s=timeout_s, what="the answer")

    def posted(self, predicate: Callable[[Call], bool] = lambda c: True) -> list[Call]:
        """Posts that created a message (follow-ups and channel messages), matching ``predicate``."""
        with self._lock:
            return [c for c in self.calls if c.created and predicate(c)]

    def summary(self) -> list[str]:
        """One line per call, for assertion messages."""
        with self._lock:
            return [f"{c.method} {c.path} -> {c.status}" for c in self.calls]

    def dispatch(self, event: str, data: dict[str, Any]) -> None:
        """Send a DISPATCH (op 0) event to the connected bot."""
        if self._loop is None or self._ws is None:
            raise RuntimeError("no bot connected to the fake gateway")
        asyncio.run_coroutine_threadsafe(self._send(0, data, event), self._loop).result(10)

    def attachment(
        self, filename: str, data: bytes, size: int | None = None, content_type: str = "image/png"
    ) -> dict[str, Any]:
        """Keep ``data`` as an uploaded file and return its attachment object (``size``: what Discord
        announces, the real size unless given)."""
        attachment_id = snowflake()
        with self._lock:
            self.files[attachment_id] = data
        url = f"http://127.0.0.1:{self.port}/attachments/{attachment_id}/{filename}"
        return {
            "id": attachment_id,
            "filename": filename,
            "size": len(data) if size is None else size,
            "url": url,
            "proxy_url": url,
            "content_type": content_type,
        }

    def slash_command(
        self,
        name: str,
        options: dict[str, Any],
        user_id: str,
        channel_id: str,
        thread_parent_id: str | None = None,
        channel_nsfw: bool = False,
    ) -> dict[str, Any]:
        """Dispatch INTERACTION_CREATE for ``/name`` with ``options`` (an attachment object from
        :meth:`attachment` as a value is an attachment option); returns the interaction."""
        kinds = {bool: 5, int: 4, float: 10, str: 3}
        resolved: dict[str, Any] = {}
        listed = []
        for key, value in options.items():
            if isinstance(value, dict):  # an attachment: its id, the object in "resolved"
                resolved[value["id"]] = value
                listed.append({"name": key, "type": 11, "value": value["id"]})
            else:
                listed.append({"name": key, "type": kinds[type(value)], "value": value})
        data: dict[str, Any] = {"id": snowflake(), "name": name, "type": 1, "options": listed}
        if resolved:
            data["resolved"] = {"attachments": resolved}
        return self._interaction(2, data, user_id, channel_id, thread_parent_id, channel_nsfw=channel_nsfw)

    def button_click(
        self,
        custom_id: str,
        user_id: str,
        channel_id: str,
        components: list[dict[str, Any]],
        channel_nsfw: bool = False,
    ) -> dict[str, Any]:
        """Dispatch INTERACTION_CREATE for a click on ``custom_id`` (type 3) under a message that
        carries ``components`` (discord.py finds the clicked button in them)."""
        message = {**self.message_json(channel_id, {"content": "result"}), "components": components}
        data = {"custom_id": custom_id, "component_type": 2}
        return self._interaction(3, data, user_id, channel_id, None, message, channel_nsfw)

    def modal_submit(
        self,
        custom_id: str,
        values: dict[str, str],
        user_id: str,
        channel_id: str,
        labelled: bool = True,
    ) -> dict[str, Any]:
        """Dispatch INTERACTION_CREATE for a submitted modal ``custom_id`` whose text inputs (by their
        ``custom_id``) hold ``values``: each in a label (type 18), as Discord sends modals built with
        labels, or in an action row (type 1) when ``labelled`` is False."""
        components: list[dict[str, Any]] = []
        for input_id, value in values.items():
            text = {"type": 4, "custom_id": input_id, "value": value}
            components.append(
                {"type": 18, "id": len(components) + 1, "component": text}
                if labelled
                else {"type": 1, "components": [text]}
            )
        data = {"custom_id": custom_id, "components": components}
        return self._interaction(5, data, user_id, channel_id, None)

    def _interaction(
        self,
        kind: int,
        data: dict[str, Any],
        user_id: str,
        channel_id: str,
        thread_parent_id: str | None,
        message: dict[str, Any] | None = None,
        channel_nsfw: bool = False,
    ) -> dict[str, Any]:
        channel = (
            thread_json(channel_id, thread_parent_id)
            if thread_parent_id
            else text_channel_json(channel_id, channel_nsfw)
        )
        interaction: dict[str, Any] = {
            "id": snowflake(),
            "application_id": APP_ID,
            "type": kind,
            "data": data,
            "guild_id": GUILD_ID,
            "channel_id": channel_id,
            "channel": channel,
            "member": {
                "user": user_json(user_id, f"user{user_id[-4:]}"),
                "roles": [],
                "joined_at": TIMESTAMP,
                "deaf": False,
                "mute": False,
                "flags": 0,
                "permissions": "0",
            },
            "token": "itok-" + snowflake(),
            "version": 1,
            "app_permissions": "0",
            "locale": "en-US",
            "guild_locale": "en-US",
            "entitlements": [],
            "authorizing_integration_owners": {"0": GUILD_ID},
            "context": 0,
            "attachment_size_limit": self.attachment_size_limit,
        }
        if message is not None:
            interaction["message"] = message
        with self._lock:
            self.interactions_sent.append(interaction)
        self.dispatch("INTERACTION_CREATE", interaction)
        return interaction

    @staticmethod
    def message_json(channel_id: str, body: dict[str, Any]) -> dict[str, Any]:
        """A message object as Discord returns it after a post or an edit."""
        return {
            "id": snowflake(),
            "channel_id": channel_id,
            "author": user_json(BOT_ID, "imaginebot", bot=True),
            "content": body.get("content") or "",
            "timestamp": TIMESTAMP,
            "edited_timestamp": None,
            "tts": False,
            "mention_everyone": False,
            "mentions": [],
            "mention_roles": [],
            "attachments": [],
            "embeds": [],
            "pinned": False,
            "type": 0,
            "flags": body.get("flags", 0) or 0,
            "components": [],
        }

    # --- gateway --------------------------------------------------------------------------------
    async def _send(self, op: int, data: Any, event: str | None = None) -> None:
        payload: dict[str, Any] = {"op": op, "d": data, "s": None, "t": event}
        if op == 0:
            self._seq += 1
            payload["s"] = self._seq
        assert self._ws is not None
        await self._ws.send_str(json.dumps(payload))

    async def _gateway(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        self._ws = ws
        self._seq = 0
        await self._send(10, {"heartbeat_interval": 41250})
        async for msg in ws:
            if msg.type != WSMsgType.TEXT:
                break
            payload = json.loads(msg.data)
            op = payload.get("op")
            if op == 1:
                await self._send(11, None)
            elif op == 2:
                await self._send(
                    0,
                    {
                        "v": 10,
                        "user": user_json(BOT_ID, "imaginebot", bot=True),
                        "guilds": [],
                        "session_id": "fake-session",
                        "resume_gateway_url": f"ws://127.0.0.1:{self.port}/gateway",
                        "shard": [0, 1],
                        "application": {"id": APP_ID, "flags": 0},
                    },
                    "READY",
                )
                self.identified.set()
        return ws

    async def _download(self, request: web.Request) -> web.Response:
        """An attachment's content, as Discord's CDN serves it."""
        return serve_file(request.match_info["id"], self.files, self.downloads, self._lock)

    # --- REST -----------------------------------------------------------------------------------
    async def _rest(self, request: web.Request) -> web.StreamResponse:
        path = "/" + request.match_info["tail"]
        call = Call(request.method, path, dict(request.headers), dict(request.query))
        if request.content_type == "multipart/form-data":
            form = await request.post()
            for name, value in form.items():
                raw = value.file.read() if isinstance(value, web.FileField) else value
                if name == "payload_json":
                    call.json = json.loads(raw)
                else:
                    call.files[name] = bytes(raw.encode() if isinstance(raw, str) else raw)
        elif request.can_read_body:
            call.json = await request.json()
        parts = path.strip("/").split("/")
        if any(len(data) > self.attachment_size_limit for data in call.files.values()):
            call.status = 413
            call.response = {"message": "Request entity too large", "code": 40005}
            with self._lock:
                self.calls.append(call)
            return web.json_response(call.response, status=413)
        posting = request.method == "POST" and len(parts) == 3 and parts[0] in ("webhooks", "channels")
        if posting and self.faults is not None:
            with self._lock:
                call.fault = self.faults.draw("post")
        if call.fault in ("429", "500", "drop_before"):
            status, body, headers = self._fault_answer(call)
            call.status, call.response = status, body
            with self._lock:
                self.calls.append(call)
            if call.fault == "drop_before":
                drop_connection(request)
                return web.Response(status=499)
            return web.json_response(body, status=status, headers=headers)
        with self._lock:
            status, body, headers = self._answer(call)
            call.status, call.response = status, body
            call.created = posting and status < 300 and not self._repeat(call)
            self.calls.append(call)
        if call.fault == "drop":
            drop_connection(request)
            return web.Response(status=499)
        if call.fault == "stall":
            assert self.faults is not None
            try:
                await asyncio.wait_for(self._stopping.wait(), self.faults.stall_s)
            except TimeoutError:
                pass
        if body is None:
            return web.Response(status=status, headers=headers)
        # discord.py parses a body only when Content-Type is exactly application/json, as Discord sends it.
        return web.Response(
            body=json.dumps(body).encode(),
            status=status,
            headers={**headers, "Content-Type": "application/json"},
        )

    def _fault_answer(self, call: Call) -> tuple[int, Any, dict[str, str]]:
        assert self.faults is not None
        if call.fault == "429":
            wait = self.faults.retry_after
            body = {"message": "You are being rate limited.", "retry_after": wait, "global": False}
            return 429, body, {"Retry-After": str(wait)}
        return (500 if call.fault == "500" else 499), {"message": "Internal Server Error", "code": 0}, {}

    def _repeat(self, call: Call) -> bool:
        """Whether ``call`` was answered with an earlier message of the same nonce (under the lock)."""
        return bool(call.response and call.response.get("_repeat"))

    def _answer(self, call: Call) -> tuple[int, Any, dict[str, str]]:
        method, parts = call.method, call.path.strip("/").split("/")
        body = call.json or {}
        if method == "GET" and call.path == "/gateway/bot":
            limit = {"total": 1000, "remaining": 1000, "reset_after": 0, "max_concurrency": 1}
            url = f"ws://127.0.0.1:{self.port}/gateway"
            return 200, {"url": url, "shards": 1, "session_start_limit": limit}, {}
        if method == "GET" and call.path == "/users/@me":
            return 200, user_json(BOT_ID, "imaginebot", bot=True), {}
        if method == "GET" and call.path == "/oauth2/applications/@me":
            return 200, self._application(), {}
        if method == "PUT" and parts[0] == "applications" and parts[-1] == "commands":
            return 200, [self._command(c) for c in (call.json or [])], {}
        if method == "POST" and parts[0] == "interactions" and parts[-1] == "callback":
            return 200, {"interaction": {"id": parts[1], "type": 2}}, {}
        if parts[0] == "webhooks" and len(parts) >= 3 and parts[2] in self.expired_tokens:
            return 404, {"message": "Unknown Webhook", "code": 10015}, {}
        if method == "POST" and parts[0] == "channels" and len(parts) == 5 and parts[4] == "threads":
            if self.refuse_threads is not None:
                return self.refuse_threads, {"message": "Missing Permissions", "code": 50013}, {}
            thread = {**thread_json(parts[3], parts[1]), "name": body.get("name")}  # id: the message's
            thread["thread_metadata"]["auto_archive_duration"] = body.get("auto_archive_duration", 1440)
            return 201, thread, {}
        posting = method == "POST" and (
            parts[0] == "webhooks" and len(parts) == 3 or parts[0] == "channels" and len(parts) == 3
        )
        if posting and self.rate_limit_followups > 0:
            self.rate_limit_followups -= 1
            limited: dict[str, Any] = {"message": "You are being rate limited.", "global": False}
            if not self.rate_limit_header_only:
                limited["retry_after"] = 1.5
            return 429, limited, {"Retry-After": "2"}
        if method == "POST" and parts[0] == "channels" and len(parts) == 3 and body.get("enforce_nonce"):
            key = (parts[1], str(body.get("nonce")))
            if key in self._nonces:  # Discord answers a repeat with the first message, creating none
                return 200, {**self._nonces[key], "_repeat": True}, {}
            self._nonces[key] = self.message_json(parts[1], body)
            return 200, self._nonces[key], {}
        if parts[0] == "webhooks" or parts[0] == "channels":
            if method == "GET" or method in ("POST", "PATCH"):
                return 200, self.message_json(parts[1], body), {}
            if method == "DELETE":
                return 204, None, {}
        return 404, {"message": f"fake Discord has no {method} {call.path}", "code": 0}, {}

    @staticmethod
    def _application() -> dict[str, Any]:
        return {
            "id": APP_ID,
            "name": "imaginebot",
            "icon": None,
            "description": "",
            "bot_public": True,
            "bot_require_code_grant": False,
            "owner": user_json(OWNER_ID, "owner"),
            "verify_key": "00",
            "flags": 0,
            "summary": "",
        }

    @staticmethod
    def _command(data: dict[str, Any]) -> dict[str, Any]:
        return {
            "id": snowflake(),
            "application_id": APP_ID,
            "version": "1",
            "type": 1,
            "options": [],
            "default_member_permissions": None,
            "dm_permission": True,
            "nsfw": False,
            **data,
        }
