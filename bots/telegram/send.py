"""Delivery to Telegram, run by the ``deliver`` task in the worker process (no polling here).

One call posts the result — a single ``sendPhoto`` of the paired image (it holds every image of the
job, one row per seed) with the caption and the inline keyboard — so a 429 can never leave half an
album behind that a retry would post again. Only after that call succeeds is the "Queued…" status
message removed, and nothing that happens then can make the task retry.
"""

from __future__ import annotations

import asyncio
import io
import logging
from collections.abc import Awaitable, Callable

from PIL import Image
from telegram import Bot, InputFile, ReplyParameters
from telegram.error import (
    BadRequest,
    ChatMigrated,
    Forbidden,
    InvalidToken,
    NetworkError,
    RetryAfter,
    TelegramError,
)

from bots.telegram.api import api_urls, retry_after_seconds
from bots.telegram.buttons import result_keyboard
from core.delivery import DeliveryContext, DeliveryFailed, DeliveryRetry, result_caption
from core.jobs import Conversation, JobRecord, JobStatus
from core.settings import Settings

log = logging.getLogger(__name__)

# Telegram's limits for photos (larger ones must go as documents).
PHOTO_MAX_BYTES = 10 * 1024 * 1024
PHOTO_MAX_SIDES = 10_000  # width + height
PHOTO_MAX_RATIO = 20
CAPTION_MAX = 1024
TEXT_MAX = 4096


def fit_photo(png: bytes) -> tuple[bytes, str, bool]:
    """``(data, filename, as_document)``: the PNG as is, re-encoded as JPEG when too heavy, or a document."""
    with Image.open(io.BytesIO(png)) as image:
        width, height = image.size
        if width + height > PHOTO_MAX_SIDES or max(width, height) > PHOTO_MAX_RATIO * min(width, height):
            return png, "imaginebot.png", True
        if len(png) <= PHOTO_MAX_BYTES:
            return png, "imaginebot.png", False
        out = io.BytesIO()
        image.convert("RGB").save(out, "JPEG", quality=90)
    jpeg = out.getvalue()
    if len(jpeg) <= PHOTO_MAX_BYTES:
        return jpeg, "imaginebot.jpg", False
    return png, "imaginebot.png", True


def send(record: JobRecord, ctx: DeliveryContext) -> None:
    """Post ``record``'s outcome as a reply in its chat and topic.

    Raises :class:`DeliveryRetry` for 429 (with Telegram's wait), network errors and timeouts, and
    :class:`DeliveryFailed` when Telegram refuses for good (bot blocked, chat or topic gone).
    """
    settings = ctx.settings
    if not settings.telegram_token:
        raise DeliveryFailed("IMAGINEBOT_TELEGRAM_TOKEN is not set on this worker")
    png = None
    if record.status == JobStatus.DONE and record.pair_key:
        png = ctx.images.get(record.pair_key)
    base_url, base_file_url = api_urls(settings)
    bot = Bot(settings.telegram_token, base_url=base_url, base_file_url=base_file_url)
    try:
        asyncio.run(_deliver(bot, record, png))
    except RetryAfter as exc:
        raise DeliveryRetry(f"telegram: {exc}", retry_after=retry_after_seconds(exc)) from exc
    # BadRequest is a NetworkError subclass in python-telegram-bot: check the permanent ones first.
    except (BadRequest, Forbidden, InvalidToken, ChatMigrated) as exc:
        raise DeliveryFailed(f"telegram refused job {record.id}: {exc}") from exc
    except NetworkError as exc:  # includes TimedOut and Telegram's 5xx
        raise DeliveryRetry(f"telegram: {exc}") from exc
    except TelegramError as exc:
        raise DeliveryFailed(f"telegram error for job {record.id}: {exc}") from exc


async def _deliver(bot: Bot, record: JobRecord, png: bytes | None) -> None:
    async with bot:  # closes the HTTP client whatever happens
        await _post_outcome(bot, record, png)
        await _clear_status(bot, record)


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
    data, filename, as_document = fit_photo(png)
    upload = InputFile(data, filename=filename)
    caption = result_caption(record)[:CAPTION_MAX]
    keyboard = result_keyboard(record)
    if as_document:
        await bot.send_document(
            chat_id,
            upload,
            caption=caption,
            reply_markup=keyboard,
            message_thread_id=thread_id,
            reply_parameters=reply,
        )
    else:
        await bot.send_photo(
            chat_id,
            upload,
            caption=caption,
            reply_markup=keyboard,
            message_thread_id=thread_id,
            reply_parameters=reply,
        )


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
    """Run ``post(bot)`` with a fresh, closed-afterwards Bot; map Telegram's errors like :func:`send`:
    :class:`DeliveryRetry` for "later", :class:`DeliveryFailed` for "never"."""
    if not settings.telegram_token:
        raise DeliveryFailed("IMAGINEBOT_TELEGRAM_TOKEN is not set on this worker")
    base_url, base_file_url = api_urls(settings)
    bot = Bot(settings.telegram_token, base_url=base_url, base_file_url=base_file_url)

    async def run() -> None:
        async with bot:
            await post(bot)

    try:
        asyncio.run(run())
    except RetryAfter as exc:
        raise DeliveryRetry(f"telegram: {exc}", retry_after=retry_after_seconds(exc)) from exc
    except (BadRequest, Forbidden, InvalidToken, ChatMigrated) as exc:
        raise DeliveryFailed(f"telegram refused {what}: {exc}") from exc
    except NetworkError as exc:
        raise DeliveryRetry(f"telegram: {exc}") from exc


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
