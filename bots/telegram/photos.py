"""Pictures sent in a chat (a prompt's picture for image-to-image, a dataset item): the largest size of
a photo, or an image sent as a file; refused by the size Telegram announces before anything is
downloaded, fetched through the Bot API's file URL (``getFile``, then the download), and handed to
core, which checks the bytes (:func:`core.uploads.check_upload`) and keeps them in Redis by key.
Only the key travels on.
"""

from __future__ import annotations

import asyncio
import logging

import httpx
from telegram import Bot, Message
from telegram.error import TelegramError

from core.conversation import ConversationService
from core.uploads import check_size, download_failed

log = logging.getLogger(__name__)
#: How long ``getFile`` and the download may take together (10 MB at most).
DOWNLOAD_TIMEOUT_S = 30.0


def picture_of(message: Message | None) -> tuple[str, int | None] | None:
    """``(file_id, announced size)`` of the picture ``message`` carries: the largest size of a photo,
    or an image sent as a file; None when it carries none."""
    if message is None:
        return None
    if message.photo:
        largest = max(message.photo, key=lambda size: (size.width * size.height, size.file_size or 0))
        return largest.file_id, largest.file_size
    document = message.document
    if document is not None and (document.mime_type or "").startswith("image/"):
        return document.file_id, document.file_size
    return None


async def stored_picture(bot: Bot, service: ConversationService, message: Message | None) -> str | None:
    """Download the picture ``message`` carries and store it as an upload; returns its key for
    ``image_key`` (None: the message carries no picture).

    Raises:
        InputError: too big (before downloading), not fetched (``image_download_failed``), or not a
            picture core accepts (:func:`core.uploads.check_upload`'s codes).
    """
    found = picture_of(message)
    if found is None:
        return None
    file_id, size = found
    check_size(size)
    try:
        data = await asyncio.wait_for(_download(bot, file_id), DOWNLOAD_TIMEOUT_S)
    except (TelegramError, httpx.HTTPError, OSError, TimeoutError) as exc:
        # The exception may hold the file URL, which holds the bot token: only its kind is logged.
        log.info("could not fetch a picture: %s", type(exc).__name__)
        raise download_failed() from None
    return await asyncio.to_thread(service.uploads.put, data)


async def _download(bot: Bot, file_id: str) -> bytes:
    """``getFile``, then the file's bytes over HTTP from the Bot API's file URL."""
    file = await bot.get_file(file_id)
    check_size(file.file_size)
    # python-telegram-bot reads a path it finds on this machine's disk (local Bot API mode) instead
    # of downloading it: a picture is only ever taken from the Bot API server's URL.
    if not (file.file_path or "").startswith(("http://", "https://")):
        raise TelegramError("getFile gave no file URL")
    return bytes(await file.download_as_bytearray())
