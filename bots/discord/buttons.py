"""The buttons under a delivered result, on the gateway side: reroll, a variation per engine, and
"show settings", each one action of the conversation service. Their ``custom_id`` format (shared
with the sender) is in ``components.py``."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

import discord

from bots.discord.components import ACTIONS, CUSTOM_ID, custom_id
from bots.discord.handlers import ask, channel_is_nsfw, draw, reply_unavailable
from core.conversation import Again, JobInfo
from core.job_client import UNAVAILABLE_ERRORS

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
        Redis is down, the same "queue unavailable" answer as the commands (not a silent failure).
        The service acts only on a job posted in this channel: a ``custom_id`` can be forged."""
        try:
            if self.action == "info":
                await ask(interaction, JobInfo(self.job_id))
            else:
                again = Again(self.job_id, ACTIONS[self.action][1], channel_is_nsfw(interaction))
                await draw(interaction, again)
        except UNAVAILABLE_ERRORS:
            await reply_unavailable(interaction)
