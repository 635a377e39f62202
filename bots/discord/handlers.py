"""How a Discord interaction becomes an action of the conversation service, and how its reply is
rendered: privately (ephemeral) for everything but a queued job, whose deferred public answer the
progress editor keeps up to date, and posted pictures (U-n, ``/show``).

The slash commands live in ``commands.py``, the result buttons and the remix modal in ``buttons.py``,
posted pictures in ``pictures.py``, the progress editor in ``progress.py``; ``bot.py`` wires them
into the client. What the bot says is written in
:mod:`core.conversation.replies`; this module only chooses how Discord shows it.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import replace
from typing import TYPE_CHECKING

import discord

from bots.discord.attachments import stored_attachment
from core.conversation import (
    Action,
    Again,
    Caller,
    Imagine,
    Prepared,
    Refused,
    Reply,
    SettingsShown,
    Upscale,
    Vary,
)
from core.errors import InputError
from core.job_client import QueueUnavailable
from core.jobs import Conversation

if TYPE_CHECKING:
    from bots.discord.bot import ImagineBot

#: Discord refuses a message longer than this.
MAX_MESSAGE_CHARS = 2000
# The core messages name the text flags (--steps); on Discord the same things are options (steps:).
_FLAG_NAMES = {
    "--seed": "seed",
    "--steps": "steps",
    "--n": "count",
    "--size": "size",
    "--no": "negative",
    "--strength": "strength",
    "--model": "model",
    "--lora": "lora",
}
_FLAG = re.compile(r"--(seed|steps|n|size|no|strength|model|lora)\b")


def discord_text(reply: Reply) -> str:
    """``reply`` as Discord shows it: the slash command's option names where core's text names a
    text flag (``steps`` for ``--steps``), and the defaults in option form."""
    if isinstance(reply, SettingsShown):
        return f"Your defaults: {reply.summary}."
    if isinstance(reply, Refused):
        return _FLAG.sub(lambda m: _FLAG_NAMES[m.group(0)], reply.text)
    return reply.text


def conversation_of(interaction: discord.Interaction) -> Conversation:
    """Where a result for ``interaction`` goes: its channel (and thread), its follow-up webhook, and
    the largest attachment Discord takes there (``attachment_size_limit``)."""
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
        attachment_size_limit=interaction.filesize_limit,
    )


def channel_is_nsfw(interaction: discord.Interaction) -> bool:
    """Whether Discord marks the interaction's channel NSFW. A thread answers for its parent only when
    discord.py knows the parent (no guild cache here: not known, so not marked), and a DM is not
    marked: a flagged picture is withheld there."""
    is_nsfw = getattr(interaction.channel, "is_nsfw", None)
    return bool(is_nsfw()) if callable(is_nsfw) else False


def caller_of(interaction: discord.Interaction[ImagineBot]) -> Caller:
    """Who pressed or typed, and where: a button's chat check uses the thread's parent channel."""
    return interaction.client.service.caller(str(interaction.user.id), conversation_of(interaction))


async def reply_private(interaction: discord.Interaction, text: str) -> None:
    """Answer ``text`` to the asker only (ephemeral), or edit the deferred answer into it."""
    text = text[:MAX_MESSAGE_CHARS]
    if interaction.response.is_done():
        await interaction.edit_original_response(content=text)
    else:
        await interaction.response.send_message(text, ephemeral=True)


async def ask(interaction: discord.Interaction[ImagineBot], action: Action) -> None:
    """Run ``action`` for the asker and answer its reply privately."""
    service = interaction.client.service
    reply = await asyncio.to_thread(service.handle, caller_of(interaction), action)
    await reply_private(interaction, discord_text(reply))


async def draw(
    interaction: discord.Interaction[ImagineBot],
    action: Imagine | Again | Vary | Upscale,
    image: discord.Attachment | None = None,
) -> None:
    """Check ``action`` before answering (a refusal is ephemeral and queues nothing), defer within
    Discord's 3-second deadline, queue it, answer with its position and follow its progress.

    With an ``image``, the answer is deferred first (downloading and checking a picture can take
    longer than Discord waits); a refusal then replaces the deferred answer."""
    bot = interaction.client
    if image is not None and isinstance(action, Imagine):
        await interaction.response.defer(thinking=True)
        try:
            action = replace(action, image_key=await stored_attachment(bot.service, image))
        except InputError as exc:
            await reply_private(interaction, discord_text(Refused.of(exc)))
            return
    prepared = await asyncio.to_thread(bot.service.prepare, caller_of(interaction), action)
    if not isinstance(prepared, Prepared):
        await reply_private(interaction, discord_text(prepared))
        return
    if not interaction.response.is_done():
        await interaction.response.defer(thinking=True)
    queued = await asyncio.to_thread(bot.service.submit, prepared)
    if isinstance(queued, Refused):  # rate limit, queue full, queue unavailable
        await reply_private(interaction, discord_text(queued))
        return
    await interaction.edit_original_response(content=queued.titled_text[:MAX_MESSAGE_CHARS])
    bot.progress.follow(interaction, queued.record.id)


async def reply_unavailable(interaction: discord.Interaction) -> None:
    """The answer while Redis cannot be reached: the same words as every front-end's."""
    await reply_private(interaction, QueueUnavailable.message)
