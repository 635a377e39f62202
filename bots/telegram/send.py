"""Delivery to Telegram, run by the ``deliver`` task in the worker process (no polling here).

One call posts the result — a single ``sendPhoto`` of the paired image (it holds every image of the
job, one row per seed) with the caption and the inline keyboard — so a 429 can never leave half an
album behind that a retry would post again. Only after that call succeeds is the "Queued…" status
message removed, and nothing that happens then can make the task retry.

Telegram's Bot API has no idempotency key and no way to look up what a bot sent, so a send whose
answer never came (read timeout, connection dropped mid-request) cannot be checked. It raises
:class:`~core.delivery.DeliveryAmbiguous` and is never repeated: the retry (``ctx.unconfirmed``)
edits the job's own status message instead — an edit is idempotent — to say the picture was sent
unconfirmed, with the Reroll buttons. Failures where the request never left (connection refused, a
connect or pool timeout) or Telegram answered (429, 5xx) are repeated as usual.

Every delivery thread of a worker shares one :class:`telegram.Bot` (one HTTP connection pool) and one
event loop, built on first use and kept for the life of the process.
"""

from __future__ import annotations

import asyncio
import io
import logging
import threading
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from typing import Any, TypeVar

import httpx
from PIL import Image
from telegram import Bot, InlineKeyboardMarkup, InputFile, Message, ReplyParameters
from telegram.error import (
    BadRequest,
    ChatMigrated,
    Forbidden,
    InvalidToken,
    NetworkError,
    RetryAfter,
    TelegramError,
    TimedOut,
)
from telegram.request import HTTPXRequest

from bots.telegram.api import api_urls, retry_after_seconds
from bots.telegram.buttons import result_keyboard
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
from core.settings import Settings

log = logging.getLogger(__name__)
T = TypeVar("T")

# Telegram's limits for photos (larger ones must go as documents).
PHOTO_MAX_BYTES = 10 * 1024 * 1024
PHOTO_MAX_SIDES = 10_000  # width + height
PHOTO_MAX_RATIO = 20
#: What a bot may upload at all (a document over this goes as a scaled-down photo instead).
UPLOAD_MAX_BYTES = 50 * 1024 * 1024
CAPTION_MAX = 1024
TEXT_MAX = 4096
# Timeouts of the shared client. A generous read timeout makes an unanswered (ambiguous) upload rare;
# concurrent delivery threads keep one slow upload from holding up the others.
CONNECT_TIMEOUT_S = 5.0
READ_TIMEOUT_S = 15.0
WRITE_TIMEOUT_S = 30.0
POOL_SIZE = 32
#: This sender calls ``ctx.on_sent`` once a request's body has fully left, so a journal that still says
#: "sending" after a crash means nothing can have been posted (worker/deliver.py).
REPORTS_SENT = True
# httpx errors raised before the request can have reached Telegram: safe to repeat.
_NOT_SENT = (
    httpx.ConnectError,
    httpx.ConnectTimeout,
    httpx.PoolTimeout,
    httpx.WriteError,
    httpx.WriteTimeout,
)


_on_sent: ContextVar[Callable[[], None] | None] = ContextVar("imaginebot_telegram_on_sent", default=None)


class _TracingTransport(httpx.AsyncHTTPTransport):
    """Calls the current delivery's ``on_sent`` when a request's body has been written in full
    (httpcore's ``send_request_body.complete`` trace event): from then on Telegram may have it."""

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        on_sent = _on_sent.get()
        if on_sent is not None:

            async def trace(event: str, info: dict[str, Any]) -> None:
                if event.endswith("send_request_body.complete"):
                    on_sent()

            request.extensions = {**request.extensions, "trace": trace}
        return await super().handle_async_request(request)


class _SharedBot:
    """One initialised :class:`Bot` and the event loop it runs on, for every thread of the process."""

    def __init__(self, settings: Settings) -> None:
        assert settings.telegram_token
        self.loop = asyncio.new_event_loop()
        threading.Thread(target=self.loop.run_forever, name="telegram-send", daemon=True).start()
        base_url, base_file_url = api_urls(settings)
        request = HTTPXRequest(
            connection_pool_size=POOL_SIZE,
            connect_timeout=CONNECT_TIMEOUT_S,
            read_timeout=READ_TIMEOUT_S,
            write_timeout=WRITE_TIMEOUT_S,
            media_write_timeout=WRITE_TIMEOUT_S,
            pool_timeout=CONNECT_TIMEOUT_S,
            httpx_kwargs={
                "transport": _TracingTransport(
                    limits=httpx.Limits(max_connections=POOL_SIZE, max_keepalive_connections=POOL_SIZE)
                )
            },
        )
        self.bot = Bot(
            settings.telegram_token, base_url=base_url, base_file_url=base_file_url, request=request
        )
        self.ready = False

    def run(self, make: Callable[[Bot], Awaitable[T]], on_sent: Callable[[], None] | None = None) -> T:
        """Run ``make(bot)`` on the shared loop and wait for it (from any thread); ``on_sent`` is
        called when a request of ``make`` has fully left."""

        async def call() -> T:
            if not self.ready:
                await self.bot.initialize()
                self.ready = True
            _on_sent.set(on_sent)  # this task's context only
            return await make(self.bot)

        return asyncio.run_coroutine_threadsafe(call(), self.loop).result()


_shared: dict[tuple[str, str], _SharedBot] = {}
_shared_lock = threading.Lock()


def shared_bot(settings: Settings) -> _SharedBot:
    """This process's client for ``settings``' token and API base (built on first use)."""
    if not settings.telegram_token:
        raise DeliveryFailed("IMAGINEBOT_TELEGRAM_TOKEN is not set on this worker")
    key = (settings.telegram_token, settings.telegram_api_base)
    with _shared_lock:
        if key not in _shared:
            _shared[key] = _SharedBot(settings)
        return _shared[key]


def call_telegram(
    settings: Settings,
    what: str,
    make: Callable[[Bot], Awaitable[T]],
    on_sent: Callable[[], None] | None = None,
) -> T:
    """Run ``make(bot)`` with the shared client, Telegram's errors mapped to the delivery errors:
    :class:`DeliveryRetry` (not posted, later), :class:`DeliveryAmbiguous` (maybe posted),
    :class:`DeliveryFailed` (never)."""
    client = shared_bot(settings)
    try:
        return client.run(make, on_sent)
    except RetryAfter as exc:
        raise DeliveryRetry(f"telegram: {exc}", retry_after=retry_after_seconds(exc)) from exc
    except InvalidToken as exc:  # its text holds the token: never pass it on
        raise DeliveryFailed("telegram rejected the bot token") from exc
    # BadRequest is a NetworkError subclass in python-telegram-bot: check the permanent ones first.
    except (BadRequest, Forbidden, ChatMigrated) as exc:
        raise DeliveryFailed(f"telegram refused {what}: {exc}") from exc
    except (TimedOut, NetworkError) as exc:
        cause = exc.__cause__
        if isinstance(cause, _NOT_SENT) or (isinstance(exc, NetworkError) and cause is None):
            # Never sent, or Telegram answered (5xx): nothing was posted.
            raise DeliveryRetry(f"telegram: {exc}") from exc
        raise DeliveryAmbiguous(f"telegram did not answer {what}: {exc!r}") from exc
    except TelegramError as exc:
        raise DeliveryFailed(f"telegram error for {what}: {exc}") from exc


def fit_photo(png: bytes, photo_only: bool = False) -> tuple[bytes, str, bool]:
    """``(data, filename, as_document)``: the PNG as is, re-encoded as JPEG when too heavy, or a document.

    Telegram refuses a photo over 10 MB, with width + height over 10000 or a side ratio over 20: such
    a picture goes as a document (the PNG as stored, its metadata kept), or, with ``photo_only``
    (only a photo can be posted behind a spoiler) or over the 50 MB upload limit, as a JPEG photo
    scaled down to fit. Never fails on size.
    """
    if len(png) > UPLOAD_MAX_BYTES:
        photo_only = True
    with Image.open(io.BytesIO(png)) as image:
        width, height = image.size
        if width + height > PHOTO_MAX_SIDES or max(width, height) > PHOTO_MAX_RATIO * min(width, height):
            if not photo_only:
                return png, "imaginebot.png", True
            return _scaled_jpeg(image), "imaginebot.jpg", False
        if len(png) <= PHOTO_MAX_BYTES:
            return png, "imaginebot.png", False
        out = io.BytesIO()
        image.convert("RGB").save(out, "JPEG", quality=90)
    jpeg = out.getvalue()
    if len(jpeg) <= PHOTO_MAX_BYTES:
        return jpeg, "imaginebot.jpg", False
    if photo_only:
        with Image.open(io.BytesIO(png)) as image:
            return _scaled_jpeg(image), "imaginebot.jpg", False
    return png, "imaginebot.png", True


def _scaled_jpeg(image: Image.Image) -> bytes:
    """``image`` scaled down (aspect kept, cropped to Telegram's side ratio) to a JPEG a photo may be."""
    width, height = image.size
    if max(width, height) > PHOTO_MAX_RATIO * min(width, height):  # crop the long side
        long = PHOTO_MAX_RATIO * min(width, height)
        image = image.crop((0, 0, min(width, long), min(height, long)))
    picture = image.convert("RGB")
    picture.thumbnail((PHOTO_MAX_SIDES // 4, PHOTO_MAX_SIDES // 4))
    out = io.BytesIO()
    picture.save(out, "JPEG", quality=85)
    return out.getvalue()


def send(record: JobRecord, ctx: DeliveryContext) -> str:
    """Post ``record``'s outcome as a reply in its chat and topic; see the module docstring.

    Raises :class:`DeliveryRetry` for 429 (with Telegram's wait), 5xx and connection failures,
    :class:`DeliveryAmbiguous` when the upload went out and no answer came back, and
    :class:`DeliveryFailed` when Telegram refuses for good (bot blocked, chat or topic gone).
    """
    png = None
    if record.status == JobStatus.DONE and record.pair_key:
        png = ctx.images.get(record.pair_key)
    if ctx.unconfirmed:
        return call_telegram(ctx.settings, f"job {record.id}", lambda bot: _mark_unconfirmed(bot, record))
    call_telegram(ctx.settings, f"job {record.id}", lambda bot: _post_outcome(bot, record, png), ctx.on_sent)
    # Posted: nothing after this point may raise (a retry would post again).
    try:
        shared_bot(ctx.settings).run(lambda bot: _clear_status(bot, record))
    except Exception as exc:  # noqa: BLE001 - best effort
        log.info("job %s: status message left as is: %r", record.id, exc)
    return POSTED


async def _mark_unconfirmed(bot: Bot, record: JobRecord) -> str:
    """An earlier send of ``record`` got no answer: say so on its status message (an idempotent edit),
    with the Reroll buttons, instead of posting the result a second time."""
    conv = record.request.conversation
    if not conv.status_message_id:
        log.warning("job %s: an earlier send is unconfirmed and there is no status message", record.id)
        return UNCONFIRMED
    text = unconfirmed_text(record) if record.status == JobStatus.DONE else _outcome_text(record)
    markup: Any = result_keyboard(record) if record.status == JobStatus.DONE else None
    try:
        await bot.edit_message_text(
            text[:TEXT_MAX],
            chat_id=int(conv.chat_id),
            message_id=int(conv.status_message_id),
            reply_markup=markup,
        )
    except BadRequest as exc:  # deleted by the user, or already says this: nothing more to do
        log.info("job %s: unconfirmed note not shown: %s", record.id, exc)
    return UNCONFIRMED


async def _post_outcome(bot: Bot, record: JobRecord, png: bytes | None) -> None:
    conv = record.request.conversation
    chat_id = int(conv.chat_id)
    thread_id = int(conv.thread_id) if conv.thread_id else None
    reply = ReplyParameters(int(conv.reply_to), allow_sending_without_reply=True) if conv.reply_to else None
    if png is None:
        await bot.send_message(
            chat_id, _outcome_text(record)[:TEXT_MAX], message_thread_id=thread_id, reply_parameters=reply
        )
        return
    await post_picture(
        bot,
        chat_id,
        png,
        result_caption(record),
        result_keyboard(record),
        spoiler=behind_spoiler(record.results),
        message_thread_id=thread_id,
        reply_parameters=reply,
    )


async def post_picture(
    bot: Bot,
    chat_id: int,
    png: bytes,
    caption: str,
    markup: InlineKeyboardMarkup | None,
    *,
    spoiler: bool = False,
    message_thread_id: int | None = None,
    reply_parameters: ReplyParameters | None = None,
) -> Message:
    """Post ``png`` with ``caption`` and buttons: a photo within Telegram's limits (re-encoded or
    scaled down when needed), else a document (:func:`fit_photo`); ``spoiler``: behind a spoiler."""
    data, filename, as_document = fit_photo(png, photo_only=spoiler)
    upload = InputFile(data, filename=filename)
    common: dict[str, Any] = {
        "caption": caption[:CAPTION_MAX],
        "reply_markup": markup,
        "message_thread_id": message_thread_id,
        "reply_parameters": reply_parameters,
    }
    if as_document:
        return await bot.send_document(chat_id, upload, **common)
    return await bot.send_photo(chat_id, upload, has_spoiler=spoiler or None, **common)


def _outcome_text(record: JobRecord) -> str:
    if record.status == JobStatus.CANCELLED:
        return f"Cancelled: “{record.request.prompt}”."
    if record.status == JobStatus.DONE:  # done, but the image expired before delivery
        return "The picture is ready but has already expired; please ask again."
    return f"Sorry, that picture failed: {record.error or 'something went wrong while drawing.'}"


async def _clear_status(bot: Bot, record: JobRecord) -> None:
    """Remove the "Queued…" message (or mark it done). Best effort: the result is already posted."""
    conv = record.request.conversation
    if not conv.status_message_id:
        return
    chat_id, message_id = int(conv.chat_id), int(conv.status_message_id)
    try:
        await bot.delete_message(chat_id, message_id)
    except TelegramError:
        try:  # bots may not delete everywhere (e.g. old messages); say "Done" instead
            await bot.edit_message_text("Done.", chat_id=chat_id, message_id=message_id)
        except TelegramError as exc:
            log.info("job %s: status message left as is: %s", record.id, exc)


def _reply_parameters(conversation: Conversation) -> ReplyParameters | None:
    if not conversation.reply_to:
        return None
    return ReplyParameters(message_id=int(conversation.reply_to), allow_sending_without_reply=True)


def _post_to_conversation(settings: Settings, what: str, post: Callable[[Bot], Awaitable[object]]) -> None:
    """Run ``post(bot)`` with the shared client; errors mapped like :func:`send`."""
    call_telegram(settings, what, post)


def send_text(conversation: Conversation, text: str, settings: Settings) -> None:
    """Post a plain text message (training progress, results) as a reply in ``conversation``."""
    _post_to_conversation(
        settings,
        "a message",
        lambda bot: bot.send_message(
            chat_id=int(conversation.chat_id),
            text=text[:TEXT_MAX],
            message_thread_id=int(conversation.thread_id) if conversation.thread_id else None,
            reply_parameters=_reply_parameters(conversation),
        ),
    )


def send_photo_text(conversation: Conversation, png: bytes, caption: str, settings: Settings) -> None:
    """Post a PNG with a caption (training pictures: loss curve, old vs new) as a reply in
    ``conversation``; same errors as :func:`send_text`."""
    data, filename, as_document = fit_photo(png)
    _post_to_conversation(
        settings,
        "a picture",
        lambda bot: (bot.send_document if as_document else bot.send_photo)(
            int(conversation.chat_id),
            InputFile(data, filename=filename),
            caption=caption[:CAPTION_MAX],
            message_thread_id=int(conversation.thread_id) if conversation.thread_id else None,
            reply_parameters=_reply_parameters(conversation),
        ),
    )


def notify(conversation: Conversation, notice: Notice, ctx: DeliveryContext) -> None:
    """Post ``notice`` (:class:`core.delivery.Outbox`); same errors as :func:`send_text`."""
    post_notice(conversation, notice, ctx, send_text, send_photo_text)
