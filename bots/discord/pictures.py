"""Posting stored pictures from the bot: U-n's picture full size (:class:`~core.conversation.Picked`,
no drawing) and ``/show``'s paired image again (:class:`~core.conversation.ResultShown`), each with its
buttons. Every file is fitted under the interaction's ``attachment_size_limit`` first
(:func:`core.picture_fit.fit_picture`): re-encoded or shrunk, never refused for its size.

The answer is deferred before the pictures are read and fitted (that may take longer than Discord's
3 seconds); the deferred answer is then edited into the public post.
"""

from __future__ import annotations

import asyncio
import io
from typing import TYPE_CHECKING

import discord

from bots.discord.handlers import reply_private
from core.buttons import EXPIRED_TEXT
from core.conversation import Picked, PictureOut, ResultShown
from core.picture_fit import fit_note, fit_picture
from core.result_buttons import ResultButton, picked_buttons, result_buttons
from core.store import ImageStore

if TYPE_CHECKING:
    from bots.discord.bot import ImagineBot

#: Discord shows at most this many attachments in one message.
MAX_FILES = 10


async def post_picked(interaction: discord.Interaction[ImagineBot], reply: Picked) -> None:
    """Post picture ``reply.index`` of each engine, full size, with Upscale / Vary / Remix under it."""
    images = interaction.client.queue.images
    limit = interaction.filesize_limit
    await interaction.response.defer(thinking=True)
    files, notes = await asyncio.to_thread(_picture_files, images, reply.pictures[:MAX_FILES], limit, reply)
    if not files:
        await reply_private(interaction, EXPIRED_TEXT)
        return
    view = view_of(picked_buttons(reply.record, reply.index))
    content = "\n".join([reply.text, *notes])
    await interaction.edit_original_response(content=content[:2000], attachments=files, view=view)


async def post_shown(interaction: discord.Interaction[ImagineBot], reply: ResultShown) -> None:
    """Post the job's paired image again with its result buttons (``/show``)."""
    images = interaction.client.queue.images
    record = reply.record
    png = await asyncio.to_thread(images.get, record.pair_key) if record.pair_key else None
    if png is None:
        await reply_private(interaction, EXPIRED_TEXT)
        return
    await interaction.response.defer(thinking=True)
    limit = interaction.filesize_limit
    fitted = await asyncio.to_thread(fit_picture, png, limit)
    file = discord.File(io.BytesIO(fitted.data), filename=fitted.filename(f"imaginebot-{record.id}"))
    content = "\n".join(filter(None, [reply.text, fit_note(fitted, limit)]))
    view = view_of(result_buttons(record))
    await interaction.edit_original_response(content=content[:2000], attachments=[file], view=view)


def view_of(rows: list[list[ResultButton]]) -> discord.ui.View:
    """A view of core's button ``rows``, sent but not kept: a press is read from its ``custom_id``
    by ``buttons.ResultButton`` (so it works after a restart)."""
    view = discord.ui.View(timeout=None)
    for number, row in enumerate(rows):
        for button in row:
            view.add_item(discord.ui.Button(label=button.label, custom_id=button.data, row=number))
    view.stop()
    return view


def _picture_files(
    images: ImageStore, pictures: list[PictureOut], limit: int, reply: Picked
) -> tuple[list[discord.File], list[str]]:
    """The pictures still stored, each fitted under ``limit``, and a note for each one changed."""
    files, notes = [], []
    for picture in pictures:
        png = images.get(picture.image_key)
        if png is None:  # expired: send the others
            continue
        fitted = fit_picture(png, limit)
        stem = f"imaginebot-{reply.record.id}-{picture.engine}-{reply.index + 1}"
        files.append(
            discord.File(io.BytesIO(fitted.data), filename=fitted.filename(stem), spoiler=picture.spoiler)
        )
        note = fit_note(fitted, limit)
        if note:
            notes.append(note)
    return files, notes
