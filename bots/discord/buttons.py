"""The buttons under a result and under a picked picture, on the gateway side, and the remix modal.

A press is read back by core (:func:`core.result_buttons.read_button`) into one action of the
conversation service: U-n posts that picture, V-n / 🔄 / Upscale queue a job, ℹ️ Info answers the
job's settings, ✏️ Remix opens a modal prefilled with the prompt whose answer is a remix
(``Vary(prompt=…)``). Every button is a :class:`discord.ui.DynamicItem` rebuilt from its ``custom_id``,
so buttons keep working after a restart; the modal's answer is read from the interaction itself
(:func:`on_modal_submit`), for the same reason. Their ``custom_id`` formats are in ``components.py``.
"""

from __future__ import annotations

import asyncio
import re
from typing import TYPE_CHECKING, Any

import discord

from bots.discord.components import CUSTOM_ID, REMIX_MODAL_ID, remix_modal_id
from bots.discord.handlers import (
    caller_of,
    channel_is_nsfw,
    discord_text,
    draw,
    reply_private,
    reply_unavailable,
)
from bots.discord.pictures import post_picked
from core.conversation import Again, Picked, Refused, RemixPrompt, Upscale, Vary
from core.errors import InputError
from core.job_client import UNAVAILABLE_ERRORS
from core.result_buttons import ButtonAction, read_button

if TYPE_CHECKING:
    from bots.discord.bot import ImagineBot

#: Discord's limits on a modal's title and a text input's value.
MAX_MODAL_TITLE = 45
MAX_INPUT_CHARS = 4000
PROMPT_INPUT_ID = "prompt"


class ResultButton(discord.ui.DynamicItem[discord.ui.Button], template=CUSTOM_ID):
    """A result button. Persistent: it is rebuilt from its ``custom_id`` (core's button data) on
    every press, after a restart too."""

    def __init__(self, data: str, label: str | None = None) -> None:
        super().__init__(discord.ui.Button(label=label or data.split(":")[0], custom_id=data))
        self.data = data

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Item[Any], match: re.Match[str], /
    ) -> ResultButton:
        """Rebuild the button from its ``custom_id``."""
        return cls(match["data"], getattr(item, "label", None))

    async def callback(self, interaction: discord.Interaction[ImagineBot]) -> None:  # type: ignore[override]
        """Run the button's action. While Redis is down, the same "queue unavailable" answer as the
        commands (not a silent failure). The service acts only on a job posted in this channel: a
        ``custom_id`` can be forged."""
        try:
            action = read_button(self.data, channel_is_nsfw(interaction))
        except InputError as exc:
            await reply_private(interaction, discord_text(Refused.of(exc)))
            return
        try:
            await press(interaction, action)
        except UNAVAILABLE_ERRORS:
            await reply_unavailable(interaction)


async def press(interaction: discord.Interaction[ImagineBot], action: ButtonAction) -> None:
    """Run a button's ``action`` and render the reply: a queued job (V-n, 🔄, Upscale) as a deferred
    public answer, U-n's picture posted, a remix's modal opened, anything else (Info, a refusal)
    privately."""
    if isinstance(action, Again | Vary | Upscale):
        await draw(interaction, action)
        return
    service = interaction.client.service
    reply = await asyncio.to_thread(service.handle, caller_of(interaction), action)
    if isinstance(reply, Picked):
        await post_picked(interaction, reply)
    elif isinstance(reply, RemixPrompt):
        await open_remix_modal(interaction, reply)
    else:
        await reply_private(interaction, discord_text(reply))


class RemixModal(discord.ui.Modal):
    """Asks for the new prompt of a picture, prefilled with the job's prompt."""

    def __init__(self, reply: RemixPrompt) -> None:
        title = f"Remix picture {reply.index + 1}"[:MAX_MODAL_TITLE]
        super().__init__(title=title, custom_id=remix_modal_id(reply.record.id, reply.index), timeout=None)
        text = discord.ui.TextInput(
            custom_id=PROMPT_INPUT_ID,
            style=discord.TextStyle.paragraph,
            default=reply.prompt[:MAX_INPUT_CHARS],
            max_length=MAX_INPUT_CHARS,
        )
        self.add_item(discord.ui.Label(text="New prompt", component=text))


async def open_remix_modal(interaction: discord.Interaction, reply: RemixPrompt) -> None:
    """Show the remix modal for ``reply``. The modal object is not kept: its answer is read by
    :func:`on_modal_submit`, which works after a restart too."""
    modal = RemixModal(reply)
    modal.stop()  # a stopped modal is sent but not kept
    await interaction.response.send_modal(modal)


async def on_modal_submit(interaction: discord.Interaction[ImagineBot]) -> bool:
    """Handle a remix modal's answer (any other interaction: False, left alone): queue the remix
    of the picture with the new prompt, as a queued job's deferred answer."""
    data = interaction.data or {}
    if interaction.type != discord.InteractionType.modal_submit:
        return False
    match = REMIX_MODAL_ID.fullmatch(str(data.get("custom_id", "")))
    if match is None:
        return False
    prompt = _text_value(data.get("components", []), PROMPT_INPUT_ID) or ""
    nsfw = channel_is_nsfw(interaction)
    try:
        await draw(
            interaction, Vary(match["job_id"], int(match["index"]), prompt=prompt, channel_is_nsfw=nsfw)
        )
    except UNAVAILABLE_ERRORS:
        await reply_unavailable(interaction)
    return True


def _text_value(components: list[Any], custom_id: str) -> str | None:
    """The value of text input ``custom_id`` in a modal's answer (in labels or action rows)."""
    for component in components:
        if not isinstance(component, dict):
            continue
        if component.get("custom_id") == custom_id and "value" in component:
            return str(component["value"])
        nested = component.get("components") or ([component["component"]] if "component" in component else [])
        found = _text_value(nested, custom_id)
        if found is not None:
            return found
    return None
