"""Delivery to Discord, run by the worker's ``deliver`` task: plain HTTPS to the REST API, no gateway.

A result goes back as a follow-up on the interaction that asked for it (``POST /webhooks/{app}/{token}``).
Interaction tokens live 15 minutes; past 14 (or when Discord says the token is gone: 401/404) the
result goes to the channel instead (``POST /channels/{id}/messages`` with the bot token), mentioning
the user. 429 and 5xx mean "later" (:class:`DeliveryRetry`), other refusals are final
(:class:`DeliveryFailed`).

With ``IMAGINEBOT_DISCORD_THREAD_PER_JOB`` a result posted outside a thread gets a public thread started
from it (``POST /channels/{id}/messages/{message}/threads``, bot token), named after the prompt. That is
best effort: where Discord refuses (no permission, a DM, a channel without threads) or fails, the
result stays delivered and the failure is only logged, never retried (a retry would post the image twice).

A send whose answer never came (read timeout, connection dropped after the request went out) raises
:class:`~core.delivery.DeliveryAmbiguous`. The retry (``ctx.unconfirmed``) never posts a follow-up
again: it edits the interaction's original answer (``PATCH .../messages/@original``, idempotent) to say
the picture was sent unconfirmed. Channel messages carry the job id as ``nonce`` with
``enforce_nonce``, so Discord itself drops a repeat within minutes: those are simply sent again.
One ``httpx.Client`` (one connection pool) serves every delivery thread of the worker; its transport
tells the delivery when a request's last byte has left (``REPORTS_SENT``), so a worker killed while
still uploading leaves a journal that says the post cannot have happened, and the next try sends it.
"""

from __future__ import annotations

import json
import logging
import mimetypes
import re
import threading
import time
from collections.abc import Callable
from contextvars import ContextVar
from typing import Any

import httpx

from bots.discord.components import result_components
from core.delivery import (
    POSTED,
    UNCONFIRMED,
    DeliveryAmbiguous,
    DeliveryContext,
    DeliveryFailed,
    DeliveryRetry,
    Notice,
    post_notice,
    result_caption,
    unconfirmed_text,
)
from core.jobs import Conversation, JobRecord, JobStatus
from core.nsfw import behind_spoiler
from core.picture_fit import FittedPicture, fit_note, fit_picture
from core.settings import Settings

log = logging.getLogger(__name__)

#: Discord's interaction tokens expire after 15 minutes; leave a minute of slack.
WEBHOOK_TTL_S = 14 * 60
#: Discord's per-attachment limit where the conversation does not say (``attachment_size_limit``).
DEFAULT_ATTACHMENT_LIMIT = 10 * 1024 * 1024
#: Times a picture refused as too large (413) is sent again smaller, and the least it is fitted to.
REFIT_TRIES = 4
MIN_ATTACHMENT_BYTES = 16 * 1024
HTTP_TIMEOUT_S = 15.0
MAX_CONTENT = 2000
MAX_THREAD_NAME = 100
THREAD_ARCHIVE_MINUTES = 1440
THREAD_TIMEOUT_S = 10.0
NO_MENTIONS: dict[str, Any] = {"parse": []}
POOL_SIZE = 32
#: This sender calls ``ctx.on_sent`` once the result's request has fully left (worker/deliver.py).
REPORTS_SENT = True
_on_sent: ContextVar[Callable[[], None] | None] = ContextVar("imaginebot_discord_on_sent", default=None)
_client: httpx.Client | None = None
_client_lock = threading.Lock()


class _TracingTransport(httpx.HTTPTransport):
    """Calls the current delivery's ``on_sent`` when a request's body has been written in full
    (httpcore's ``send_request_body.complete`` trace event): from then on Discord may have it."""

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        on_sent = _on_sent.get()
        if on_sent is not None:

            def trace(event: str, info: dict[str, Any]) -> None:
                if event.endswith("send_request_body.complete"):
                    on_sent()

            request.extensions = {**request.extensions, "trace": trace}
        return super().handle_request(request)


def client() -> httpx.Client:
    """The worker's one HTTP client (connection pool) for Discord, shared by all delivery threads."""
    global _client
    with _client_lock:
        if _client is None:
            limits = httpx.Limits(max_connections=POOL_SIZE, max_keepalive_connections=POOL_SIZE)
            _client = httpx.Client(transport=_TracingTransport(limits=limits), timeout=HTTP_TIMEOUT_S)
        return _client


class _TooLarge(DeliveryFailed):
    """Discord refused a file as too large (413): nothing was posted."""


def send(record: JobRecord, ctx: DeliveryContext) -> str:
    """Post ``record``'s outcome (image, error or cancellation) into its Discord conversation.

    The picture is fitted under the conversation's attachment limit first; should Discord still
    answer 413 (the server's limit went down since), it is sent again at half the refused size."""
    limit = attachment_limit(record.request.conversation)
    for _ in range(REFIT_TRIES):
        payload, png = _message(record, ctx, limit)
        try:
            return _deliver(record, ctx, payload, png)
        except _TooLarge:
            if png is None or len(png) <= MIN_ATTACHMENT_BYTES:
                raise
            log.warning("job %s: Discord refused %d bytes as too large; sending less", record.id, len(png))
            limit = max(MIN_ATTACHMENT_BYTES, len(png) // 2)
    payload, png = _message(record, ctx, limit)
    return _deliver(record, ctx, payload, png)


def _deliver(record: JobRecord, ctx: DeliveryContext, payload: dict[str, Any], png: bytes | None) -> str:
    """Post ``payload`` (and ``png``) as :func:`send` describes."""
    conv = record.request.conversation
    base = ctx.settings.discord_api_base.rstrip("/")
    fresh = time.time() - record.created_at < WEBHOOK_TTL_S
    webhook = f"{base}/webhooks/{conv.application_id}/{conv.interaction_token}"
    if conv.interaction_token and conv.application_id and fresh:
        if ctx.unconfirmed:  # a follow-up may be posted already: edit the original answer instead
            note = {"content": unconfirmed_text(record)[:MAX_CONTENT], "allowed_mentions": NO_MENTIONS}
            if png is not None:
                note["components"] = payload["components"]
            response = _post(f"{webhook}/messages/@original", note, None, headers={}, method="PATCH")
            if response.status_code not in (401, 404):
                _check(response)
                return UNCONFIRMED
        else:
            body = {**payload, "allowed_mentions": NO_MENTIONS}
            response = _post(webhook, body, png, headers={}, on_sent=ctx.on_sent)
            if response.status_code not in (401, 404):  # 401/404: the token expired; use the channel
                _check(response)
                _maybe_start_thread(record, ctx, png, response)
                return POSTED
    token = ctx.settings.discord_token
    if not token:
        raise DeliveryFailed("the interaction token expired and IMAGINEBOT_DISCORD_TOKEN is not set")
    user_id = record.request.user.split(":", 1)[-1]
    mentioned = {
        **payload,
        "content": f"<@{user_id}> {payload['content']}"[:MAX_CONTENT],
        "allowed_mentions": {"users": [user_id]},
        # Discord returns the first message instead of posting a second one with the same nonce.
        "nonce": record.id[:25],
        "enforce_nonce": True,
    }
    channel_id = conv.thread_id or conv.chat_id
    url = f"{base}/channels/{channel_id}/messages"
    response = _post(url, mentioned, png, headers={"Authorization": f"Bot {token}"}, on_sent=ctx.on_sent)
    _check(response)
    _maybe_start_thread(record, ctx, png, response)
    return POSTED


def _maybe_start_thread(
    record: JobRecord, ctx: DeliveryContext, png: bytes | None, posted: httpx.Response
) -> None:
    """Start a public thread from the result message just ``posted``, when configured. Never raises:
    the result is already delivered, so any failure here is logged and left alone."""
    conv = record.request.conversation
    settings = ctx.settings
    if not settings.discord_thread_per_job or conv.thread_id or png is None:
        return
    try:
        if not settings.discord_token:
            log.warning("job %s: no thread (IMAGINEBOT_DISCORD_TOKEN is not set)", record.id)
            return
        message = posted.json()
        message_id = message.get("id") if isinstance(message, dict) else None
        if not message_id:
            log.warning("job %s: no thread (Discord returned no message id)", record.id)
            return
        base = settings.discord_api_base.rstrip("/")
        response = client().post(  # outside a thread, the result went to the conversation's channel
            f"{base}/channels/{conv.chat_id}/messages/{message_id}/threads",
            json={
                "name": thread_name(record.request.prompt),
                "auto_archive_duration": THREAD_ARCHIVE_MINUTES,
            },
            headers={"Authorization": f"Bot {settings.discord_token}"},
            timeout=THREAD_TIMEOUT_S,
        )
        if response.status_code >= 300:
            log.warning(
                "job %s: Discord refused a thread (delivered without one): %s %s",
                record.id,
                response.status_code,
                response.text[:200],
            )
    except Exception as exc:  # noqa: BLE001 - best effort: the result is delivered already
        log.warning("job %s: could not start a thread (delivered without one): %r", record.id, exc)


def thread_name(prompt: str) -> str:
    """A thread name from ``prompt``: one line, 1 to 100 characters."""
    name = re.sub(r"\s+", " ", prompt).strip()
    if len(name) > MAX_THREAD_NAME:
        name = name[: MAX_THREAD_NAME - 1].rstrip() + "…"
    return name or "imaginebot"


def _message(record: JobRecord, ctx: DeliveryContext, limit: int) -> tuple[dict[str, Any], bytes | None]:
    """The message JSON and the paired picture (None for a text-only message): the PNG, or a smaller
    encoding of it when the PNG is over ``limit`` bytes."""
    prompt = record.request.prompt
    if record.status == JobStatus.FAILED:
        error = record.error or "something went wrong while drawing"
        return {"content": f"Sorry, “{prompt}” failed: {error}"[:MAX_CONTENT]}, None
    if record.status == JobStatus.CANCELLED:
        return {"content": f"Cancelled: “{prompt}”"[:MAX_CONTENT]}, None
    png = ctx.images.get(record.pair_key) if record.pair_key else None
    if png is None:
        return {"content": f"“{prompt}” is done, but its image has expired."[:MAX_CONTENT]}, None
    fitted = fit_picture(png, limit)
    caption = "\n".join(filter(None, [result_caption(record), fit_note(fitted, limit)]))
    payload = {
        "content": caption[:MAX_CONTENT],
        "attachments": [{"id": 0, "filename": _filename(record, fitted)}],
        "components": result_components(record),
    }
    return payload, fitted.data


def attachment_limit(conversation: Conversation) -> int:
    """The most bytes one attachment may have in ``conversation``: what its interaction said, else
    Discord's default."""
    return conversation.attachment_size_limit or DEFAULT_ATTACHMENT_LIMIT


def _filename(record: JobRecord, fitted: FittedPicture) -> str:
    """The attachment's name; Discord hides an attachment named ``SPOILER_…`` behind a spoiler."""
    name = fitted.filename(f"imaginebot-{record.id}")
    return f"SPOILER_{name}" if behind_spoiler(record.results) else name


def _post(
    url: str,
    payload: dict[str, Any],
    png: bytes | None,
    headers: dict[str, str],
    method: str = "POST",
    on_sent: Callable[[], None] | None = None,
) -> httpx.Response:
    """Send JSON, or multipart (``payload_json`` + ``files[0]``) when there is an image.

    Raises :class:`DeliveryRetry` when the request cannot have reached Discord (connection refused,
    connect timeout, a failed upload) and :class:`DeliveryAmbiguous` when it may have: it went out
    and no answer came back. ``on_sent`` is called once its last byte has left.
    """
    token = _on_sent.set(on_sent)
    try:
        if png is None:
            return client().request(method, url, json=payload, headers=headers)
        filename = payload["attachments"][0]["filename"]
        mime = mimetypes.guess_type(filename)[0] or "image/png"
        files = {
            "payload_json": (None, json.dumps(payload), "application/json"),
            "files[0]": (filename, png, mime),
        }
        return client().request(method, url, files=files, headers=headers)
    except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
        raise DeliveryRetry(f"Discord unreachable: {exc.__class__.__name__}") from exc
    except (httpx.WriteError, httpx.WriteTimeout) as exc:  # an incomplete request is never processed
        raise DeliveryRetry(f"Discord upload failed: {exc.__class__.__name__}") from exc
    except (httpx.TimeoutException, httpx.RemoteProtocolError, httpx.ReadError) as exc:
        raise DeliveryAmbiguous(f"Discord did not answer: {exc.__class__.__name__}") from exc
    except httpx.HTTPError as exc:
        raise DeliveryRetry(f"Discord unreachable: {exc.__class__.__name__}") from exc
    finally:
        _on_sent.reset(token)


def _check(response: httpx.Response) -> None:
    """Raise unless Discord accepted the message."""
    status = response.status_code
    if status < 300:
        return
    if status == 429:
        raise DeliveryRetry("Discord rate limit", retry_after=_retry_after(response))
    if status == 413:
        raise _TooLarge(f"Discord refused the file as too large: {response.text[:200]}")
    if status >= 500:
        raise DeliveryRetry(f"Discord answered {status}")
    raise DeliveryFailed(f"Discord refused the message: {status} {response.text[:200]}")


def _retry_after(response: httpx.Response) -> float | None:
    """Seconds to wait, from the JSON body (precise) or the ``Retry-After`` header."""
    try:
        value = response.json().get("retry_after")
    except (ValueError, AttributeError):
        value = None
    if value is None:
        value = response.headers.get("Retry-After")
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None


def send_text(conversation: Conversation, text: str, settings: Settings) -> None:
    """Post a plain text message (training progress, results) in ``conversation``'s channel or thread.

    Uses the bot token (interaction tokens expire long before a training run ends).
    """
    if not settings.discord_token:
        raise DeliveryFailed("IMAGINEBOT_DISCORD_TOKEN is not set on this worker")
    base = settings.discord_api_base.rstrip("/")
    channel_id = conversation.thread_id or conversation.chat_id
    payload = {"content": text[:MAX_CONTENT], "allowed_mentions": NO_MENTIONS}
    headers = {"Authorization": f"Bot {settings.discord_token}"}
    _check(_post(f"{base}/channels/{channel_id}/messages", payload, None, headers=headers))


def send_photo_text(conversation: Conversation, png: bytes, caption: str, settings: Settings) -> None:
    """Post a PNG with a caption (training pictures: loss curve, old vs new) in ``conversation``'s
    channel or thread, with the bot token; same errors as :func:`send_text`."""
    if not settings.discord_token:
        raise DeliveryFailed("IMAGINEBOT_DISCORD_TOKEN is not set on this worker")
    base = settings.discord_api_base.rstrip("/")
    channel_id = conversation.thread_id or conversation.chat_id
    payload = {
        "content": caption[:MAX_CONTENT],
        "allowed_mentions": NO_MENTIONS,
        "attachments": [{"id": 0, "filename": "imaginebot-training.png"}],
    }
    headers = {"Authorization": f"Bot {settings.discord_token}"}
    _check(_post(f"{base}/channels/{channel_id}/messages", payload, png, headers=headers))


def notify(conversation: Conversation, notice: Notice, ctx: DeliveryContext) -> None:
    """Post ``notice`` (:class:`core.delivery.Outbox`); same errors as :func:`send_text`."""
    post_notice(conversation, notice, ctx, send_text, send_photo_text)
