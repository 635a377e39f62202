"""The progress editor: keeps editing a queued job's deferred answer ("position N", "drawing step
k/n", "done") until the job finishes or the interaction token is about to expire. The words are
core's status line (:func:`core.conversation.status_line`, titled: the answer stands alone)."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING

import discord

from core.conversation import status_line
from core.errors import JobNotFound
from core.heartbeats import job_notice

if TYPE_CHECKING:
    from bots.discord.bot import ImagineBot

log = logging.getLogger(__name__)

#: Stop editing an answer after this long: its interaction token expires at 15 minutes.
PROGRESS_LIMIT_S = 14 * 60


class ProgressTracker:
    """Edits each pending job's answer with its progress, at most once per ``interval_s`` each."""

    def __init__(self, bot: ImagineBot, interval_s: float) -> None:
        self.bot = bot
        self.interval_s = max(0.1, interval_s)
        self.tasks: set[asyncio.Task[None]] = set()

    def follow(self, interaction: discord.Interaction, job_id: str) -> None:
        """Start following ``job_id`` (bounded by the interaction token's lifetime)."""
        task = asyncio.create_task(self._run(interaction, job_id), name=f"progress-{job_id}")
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _run(self, interaction: discord.Interaction, job_id: str) -> None:
        deadline = time.monotonic() + PROGRESS_LIMIT_S
        last = ""
        while time.monotonic() < deadline:
            await asyncio.sleep(self.interval_s)
            try:
                record, position = await asyncio.to_thread(self.bot.queue.status, job_id)
                notice = await asyncio.to_thread(job_notice, self.bot.queue.redis, record)
            except JobNotFound:
                return
            text = status_line(record, position, notice, titled=True)[:2000]
            if text != last:
                try:
                    await interaction.edit_original_response(content=text)
                except discord.HTTPException as exc:  # token expired or message deleted: stop
                    ids = {"job_id": job_id}
                    log.info("progress of %s: edit refused (%s)", job_id, exc.status, extra=ids)
                    return
                last = text
            if record.status.finished:
                return

    async def close(self) -> None:
        """Stop following every job."""
        for task in list(self.tasks):
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
