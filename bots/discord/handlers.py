"""What every Discord handler shares: who is asking and where, how an error is answered, and the
defer → submit → position answer that ``/imagine`` and the result buttons both end with.

The slash commands live in ``commands.py``, the result buttons in ``buttons.py``, the progress
editor in ``progress.py``; ``bot.py`` wires them into the client.
"""

from __future__ import annotations

import asyncio
import re
from typing import TYPE_CHECKING

import discord

from bots.discord.progress import position_text
from core.errors import InputError
from core.heartbeats import job_notice
from core.jobs import Conversation, JobRequest

if TYPE_CHECKING:
    from bots.discord.bot import ImagineBot

# The core messages name the text flags (--steps); on Discord the same things are options (steps:).
_FLAG_NAMES = {"--seed": "seed", "--steps": "steps", "--n": "count", "--size": "size", "--no": "negative"}
_FLAG = re.compile(r"--(seed|steps|n|size|no)\b")


def discord_message(exc: InputError) -> str:
    """``exc.message`` with text-flag names replaced by the slash command's option names."""
    return _FLAG.sub(lambda m: _FLAG_NAMES[m.group(0)], exc.message)


def user_key(user: discord.abc.User) -> str:
    """The ``platform:user_id`` form core uses for limits, preferences and ownership."""
    return f"discord:{user.id}"


def conversation_of(interaction: discord.Interaction) -> Conversation:
    """Where a result for ``interaction`` goes: its channel (and thread), and its follow-up webhook."""
    channel = interaction.channel
    channel_id = str(interaction.channel_id)
    thread_id = None
    if isinstance(channel, discord.Thread):
        thread_id = channel_id
        channel_id = str(channel.parent_id)
    return Conversation(
        platform="discord",
        chat_id=channel_id,
        thread_id=thread_id,
        interaction_token=interaction.token,
        application_id=str(interaction.application_id),
    )


async def reply_error(interaction: discord.Interaction, exc: InputError) -> None:
    """Tell only the person who asked, whether or not the interaction was answered already."""
    await reply_private(interaction, discord_message(exc))


async def reply_private(interaction: discord.Interaction, text: str) -> None:
    """Answer ``text`` to the asker only (ephemeral), or edit the deferred answer into it."""
    if interaction.response.is_done():
        await interaction.edit_original_response(content=text)
    else:
        await interaction.response.send_message(text[:2000], ephemeral=True)


async def submit_and_answer(interaction: discord.Interaction[ImagineBot], request: JobRequest) -> None:
    """Defer, queue ``request`` (validated), answer with the position, and follow its progress."""
    bot = interaction.client
    await interaction.response.defer(thinking=True)
    try:
        record = await asyncio.to_thread(bot.queue.submit, request)
    except InputError as exc:  # rate limit, queue full
        await reply_error(interaction, exc)
        return
    position = await asyncio.to_thread(bot.queue.position, record.id)
    notice = await asyncio.to_thread(job_notice, bot.queue.redis, record)  # no worker up yet?
    await interaction.edit_original_response(content=position_text(record, position, notice))
    bot.progress.follow(interaction, record.id)
