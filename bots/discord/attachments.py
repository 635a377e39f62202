"""Pictures attached to a slash command (image-to-image): refused by the size Discord announces before
anything is downloaded, then fetched from Discord's CDN and handed to core, which checks the bytes
(:func:`core.uploads.check_upload`) and keeps them in Redis by key. Only the key travels on."""

from __future__ import annotations

import asyncio

import aiohttp
import discord

from core.conversation import ConversationService
from core.uploads import check_size, download_failed

#: How long a download from Discord's CDN may take (10 MB at most).
DOWNLOAD_TIMEOUT_S = 30.0


def check_attachment(attachment: discord.Attachment) -> None:
    """Refuse ``attachment`` by the size Discord announces (:class:`~core.errors.InputError`)."""
    check_size(attachment.size)


async def stored_attachment(service: ConversationService, attachment: discord.Attachment) -> str:
    """Download ``attachment`` and store it as an upload; returns its key for ``Imagine.image_key``.

    Raises:
        InputError: too big (before downloading), not fetched (``image_download_failed``), or not a
            picture core accepts (:func:`core.uploads.check_upload`'s codes).
    """
    check_attachment(attachment)
    try:
        data = await asyncio.wait_for(attachment.read(), DOWNLOAD_TIMEOUT_S)
    except (discord.HTTPException, aiohttp.ClientError, TimeoutError) as exc:
        raise download_failed() from exc
    return await asyncio.to_thread(service.uploads.put, data)
