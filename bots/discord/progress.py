"""The progress editor: keeps editing a queued job's deferred answer ("position N", "drawing step
k/n", "done") until the job finishes or the interaction token is about to expire."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING

import discord

from core.errors import JobNotFound
from core.heartbeats import job_notice
from core.jobs import JobRecord, JobStatus

if TYPE_CHECKING:
    from bots.discord.bot import ImagineBot

log = logging.getLogger(__name__)

#: Stop editing an answer after this long: its interaction token expires at 15 minutes.
PROGRESS_LIMIT_S = 14 * 60


def position_text(record: JobRecord, position: int | None, notice: str | None = None) -> str:
    """The answer to a queued job: what is being drawn and where it stands (``notice``: no live
    worker can draw it yet)."""
    what = f"“{record.request.prompt}” ({', '.join(record.request.engines)}, seed {record.seed})"
    if record.status == JobStatus.QUEUED:
        return f"Queued {what}, position {position or 1}." + (f" {notice}" if notice else "")
    if record.status == JobStatus.RUNNING:
        progress = record.progress
        if progress is not None:
            return f"Drawing {what}: {progress.engine} step {progress.step}/{progress.total}."
        return f"Drawing {what}…"
    if record.status == JobStatus.DONE:
        return f"Done: {what}."
    if record.status == JobStatus.CANCELLED:
        return f"Cancelled: {what}."
    return f"Failed: {what}: {record.error or 'unknown error'}"


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
            text = position_text(record, position, notice)
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
