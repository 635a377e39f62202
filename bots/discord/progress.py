"""The progress editor: keeps editing a queued job's deferred answer ("position N", "drawing step
k/n", "done") until the job finishes or the interaction token is about to expire. The words are
core's status line (:func:`core.conversation.status_line`, titled: the answer stands alone). While a
diffusion job draws, the answer also carries its latest preview picture (``Progress.preview_key``),
replaced at most every :data:`PREVIEW_INTERVAL_S` and removed when the job is done."""

from __future__ import annotations

import asyncio
import io
import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import discord

from core.conversation import status_line
from core.errors import JobNotFound
from core.heartbeats import job_notice
from core.jobs import JobRecord

if TYPE_CHECKING:
    from bots.discord.bot import ImagineBot

log = logging.getLogger(__name__)

#: Stop editing an answer after this long: its interaction token expires at 15 minutes.
PROGRESS_LIMIT_S = 14 * 60
#: At most one new preview picture per answer this often.
PREVIEW_INTERVAL_S = 4.0
PREVIEW_FILENAME = "preview.png"


@dataclass
class _Shown:
    """What one answer shows now: its text, and the preview it carries (key, when it was attached)."""

    text: str = ""
    preview_key: str | None = None
    preview_at: float = float("-inf")


class ProgressTracker:
    """Edits each pending job's answer with its progress, at most once per ``interval_s`` each, and
    with its latest preview picture at most once per ``preview_interval_s`` (an upload costs Discord
    more than a text edit; its limit is a few edits a second per webhook)."""

    def __init__(
        self, bot: ImagineBot, interval_s: float, preview_interval_s: float = PREVIEW_INTERVAL_S
    ) -> None:
        self.bot = bot
        self.interval_s = max(0.1, interval_s)
        self.preview_interval_s = max(self.interval_s, preview_interval_s)
        self.tasks: set[asyncio.Task[None]] = set()

    def follow(self, interaction: discord.Interaction, job_id: str) -> None:
        """Start following ``job_id`` (bounded by the interaction token's lifetime)."""
        task = asyncio.create_task(self._run(interaction, job_id), name=f"progress-{job_id}")
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _run(self, interaction: discord.Interaction, job_id: str) -> None:
        deadline = time.monotonic() + PROGRESS_LIMIT_S
        shown = _Shown()
        while time.monotonic() < deadline:
            await asyncio.sleep(self.interval_s)
            try:
                record, position = await asyncio.to_thread(self.bot.queue.status, job_id)
                notice = await asyncio.to_thread(job_notice, self.bot.queue.redis, record)
            except JobNotFound:
                return
            text = status_line(record, position, notice, titled=True)[:2000]
            preview = await self._new_preview(record, shown)
            finished = record.status.finished
            edit: dict[str, Any] = {}
            if preview is not None:
                edit["attachments"] = [discord.File(io.BytesIO(preview), filename=PREVIEW_FILENAME)]
            elif finished and shown.preview_key:  # the result is posted on its own: drop the preview
                edit["attachments"] = []
            if text != shown.text or edit:
                try:
                    await interaction.edit_original_response(content=text, **edit)
                except discord.HTTPException as exc:  # token expired or message deleted: stop
                    ids = {"job_id": job_id}
                    log.info("progress of %s: edit refused (%s)", job_id, exc.status, extra=ids)
                    return
                shown.text = text
            if finished:
                return

    async def _new_preview(self, record: JobRecord, shown: _Shown) -> bytes | None:
        """The PNG of ``record``'s latest preview when it is new and one may be shown now, else None
        (a preview expired before it was read is skipped)."""
        key = record.progress.preview_key if record.progress else None
        now = time.monotonic()
        if record.status.finished or not key or key == shown.preview_key:
            return None
        if now - shown.preview_at < self.preview_interval_s:
            return None
        png = await asyncio.to_thread(self.bot.queue.images.get, key)
        if png is None:
            return None
        shown.preview_key, shown.preview_at = key, now
        return png

    async def close(self) -> None:
        """Stop following every job."""
        for task in list(self.tasks):
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
