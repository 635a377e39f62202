"""The buttons under a delivered result, on the gateway side: reroll, a variation per engine, and
"show settings". Their ``custom_id`` format (shared with the sender) is in ``components.py``."""

from __future__ import annotations

import asyncio
import re
from typing import TYPE_CHECKING, Any

import discord

from bots.discord.components import ACTIONS, CUSTOM_ID, custom_id
from bots.discord.handlers import conversation_of, reply_error, submit_and_answer, user_key
from core.buttons import pressed_job
from core.errors import InputError
from core.job_client import UNAVAILABLE_ERRORS, QueueUnavailable
from core.jobs import JobRecord
from core.validation import validate_request

if TYPE_CHECKING:
    from bots.discord.bot import ImagineBot


class ResultButton(discord.ui.DynamicItem[discord.ui.Button], template=CUSTOM_ID):
    """A button under a delivered image. Persistent: it is rebuilt from its ``custom_id`` after a restart."""

    def __init__(self, action: str, job_id: str) -> None:
        super().__init__(discord.ui.Button(label=ACTIONS[action][0], custom_id=custom_id(action, job_id)))
        self.action = action
        self.job_id = job_id

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Item[Any], match: re.Match[str], /
    ) -> ResultButton:
        """Rebuild the button from ``ib:<action>:<job_id>``."""
        return cls(match["action"], match["job_id"])

    async def callback(self, interaction: discord.Interaction[ImagineBot]) -> None:  # type: ignore[override]
        """Reroll (new seed), a variation (one engine, new seed), or show the job's settings; while
        Redis is down, the same "queue unavailable" answer as the commands (not a silent failure)."""
        try:
            await self._act(interaction)
        except UNAVAILABLE_ERRORS:
            await reply_error(interaction, QueueUnavailable())

    async def _act(self, interaction: discord.Interaction[ImagineBot]) -> None:
        bot = interaction.client
        # A custom_id can be forged: act only on a job posted in this channel (or its threads).
        here = conversation_of(interaction).chat_id
        try:
            original = await asyncio.to_thread(pressed_job, bot.queue.jobs, self.job_id, "discord", here)
        except InputError as exc:
            await interaction.response.send_message(exc.message, ephemeral=True)
            return
        if self.action == "info":
            await interaction.response.send_message(job_settings_text(original), ephemeral=True)
            return
        engine = ACTIONS[self.action][1]
        try:
            request = validate_request(
                original.request.model_copy(
                    update={
                        "engines": [engine] if engine else original.request.engines,
                        "seed": None,
                        "user": user_key(interaction.user),
                        "conversation": conversation_of(interaction),
                    }
                ),
                bot.settings,
            )
        except InputError as exc:  # e.g. the engine was disabled since
            await reply_error(interaction, exc)
            return
        await submit_and_answer(interaction, request)


def job_settings_text(record: JobRecord) -> str:
    """Everything needed to draw ``record`` again."""
    req = record.request
    text = (
        f"“{req.prompt}” · engines {', '.join(req.engines)} · seed {record.seed} · steps {record.steps} · "
        f"size {record.size} · count {req.count}"
    )
    if req.negative_prompt:
        text += f" · negative “{req.negative_prompt}”"
    return text[:2000]
