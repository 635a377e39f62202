"""``/dataset`` on Discord (community datasets, :mod:`core.datasets_chat`): a command group whose
subcommands are admins' ``add name:… image:… caption:…``, ``list``, ``show name:…`` (the contact
sheet attached) and ``remove name:… item:…``. Every answer is ephemeral. ``add`` is deferred before
the attachment is downloaded and checked (:mod:`bots.discord.attachments`); the admin check is core's
(``default_permissions`` only hides the group).
"""

from __future__ import annotations

import asyncio
import io
from typing import TYPE_CHECKING

import discord
from discord import app_commands

from bots.discord.attachments import check_attachment, stored_attachment
from bots.discord.handlers import caller_of, discord_text, reply_private
from core.conversation import Refused
from core.datasets_chat import (
    NOT_ADMIN_DATASET,
    DatasetAction,
    DatasetAdd,
    DatasetList,
    DatasetRemove,
    DatasetShow,
    DatasetShown,
)
from core.errors import InputError

if TYPE_CHECKING:
    from bots.discord.bot import ImagineBot

dataset = app_commands.Group(
    name="dataset",
    description="Community datasets to retrain on (admins)",
    default_permissions=discord.Permissions(manage_guild=True),
)


async def _run(interaction: discord.Interaction[ImagineBot], action: DatasetAction) -> None:
    """Run ``action`` for the asker; the reply privately (``show``: with the contact sheet)."""
    reply = await asyncio.to_thread(interaction.client.service.handle, caller_of(interaction), action)
    if isinstance(reply, DatasetShown):
        sheet = discord.File(io.BytesIO(reply.sheet_png), filename=f"{reply.name}.png")
        if interaction.response.is_done():
            await interaction.edit_original_response(content=reply.text, attachments=[sheet])
        else:
            await interaction.response.send_message(reply.text, file=sheet, ephemeral=True)
        return
    await reply_private(interaction, discord_text(reply))  # type: ignore[arg-type]


@dataset.command(name="add", description="Add a captioned picture to a dataset (made if new)")
@app_commands.describe(
    name="Dataset name: 1-32 lower-case letters, digits or dashes",
    image="The picture (PNG, JPEG or WebP, up to 10 MB)",
    caption="What the picture shows, in words",
)
async def add(
    interaction: discord.Interaction[ImagineBot], name: str, image: discord.Attachment, caption: str
) -> None:
    """Check the caller and the attachment's announced size, defer, download and add it."""
    if not caller_of(interaction).is_admin:
        await reply_private(interaction, NOT_ADMIN_DATASET)
        return
    try:
        check_attachment(image)
    except InputError as exc:
        await reply_private(interaction, discord_text(Refused.of(exc)))
        return
    await interaction.response.defer(ephemeral=True, thinking=True)
    try:
        key = await stored_attachment(interaction.client.service, image)
    except InputError as exc:
        await reply_private(interaction, discord_text(Refused.of(exc)))
        return
    await _run(interaction, DatasetAdd(name, caption, key))


@dataset.command(name="list", description="The datasets made in chat and their sizes")
async def list_(interaction: discord.Interaction[ImagineBot]) -> None:
    """List the community datasets."""
    await _run(interaction, DatasetList())


@dataset.command(name="show", description="A dataset's size, a contact sheet and a few captions")
@app_commands.describe(name="Dataset name")
async def show(interaction: discord.Interaction[ImagineBot], name: str) -> None:
    """Show one dataset."""
    await _run(interaction, DatasetShow(name))


@dataset.command(name="remove", description="Remove one picture from a dataset")
@app_commands.describe(name="Dataset name", item="Item id, as /dataset show lists it")
async def remove(interaction: discord.Interaction[ImagineBot], name: str, item: str) -> None:
    """Remove an item."""
    await _run(interaction, DatasetRemove(name, item))
