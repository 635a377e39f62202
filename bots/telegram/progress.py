"""Keeps each pending job's "Queued…" status message up to date from the job records in Redis.

The bot process polls the records of the jobs it queued and edits their status messages, at most
once every ``progress_interval_s`` per chat (Telegram limits how often a bot may write to one chat).
The delivery worker removes the status message when the result is posted; this only tracks jobs
until they finish.

Live previews: when a job's record names a preview picture (``Progress.preview_key``, a small PNG
the worker keeps in Redis for a short while), the bot posts it as a photo status message under the
prompt, captioned with the status line, and swaps its picture (``editMessageMedia``) as newer
previews come; these edits share the chat's budget with the text edits, and a chat gets a new
preview picture at most every ``PREVIEW_INTERVAL_S`` (an upload; Telegram allows a group about 20
messages a minute). Once the result is posted (or the job failed or was cancelled) the preview
message is deleted.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

from telegram import Bot, InputMediaPhoto, ReplyParameters
from telegram.error import RetryAfter, TelegramError
from telegram.ext import Application

from bots.telegram.api import retry_after_seconds
from core.conversation.status import status_line
from core.errors import JobNotFound
from core.heartbeats import job_notice
from core.job_client import QueueClient
from core.jobs import JobRecord, JobStatus

log = logging.getLogger(__name__)
TICK_S = 0.25
#: How long a preview message may wait for the result to be posted before it is removed anyway.
PREVIEW_LINGER_S = 60.0
#: At most one new preview picture per chat this often.
PREVIEW_INTERVAL_S = 3.0


@dataclass
class _Tracked:
    chat_id: int
    message_id: int
    text: str
    preview_key: str | None = None  # the preview on show
    preview_message_id: int | None = None


class ProgressTracker:
    """Status messages of this bot's pending jobs, edited as their records change."""

    def __init__(self, queue: QueueClient, interval_s: float) -> None:
        self.queue = queue
        self.interval_s = interval_s
        self.preview_interval_s = max(interval_s, PREVIEW_INTERVAL_S)
        self.next_preview: dict[int, float] = {}  # chat id -> monotonic time of the next preview
        self.jobs: dict[str, _Tracked] = {}
        self.next_edit: dict[int, float] = {}  # chat id -> monotonic time of the next allowed edit
        self._task: asyncio.Task[None] | None = None

    def may_edit(self, chat_id: int) -> bool:
        """Whether ``chat_id`` may get another edit now."""
        return time.monotonic() >= self.next_edit.get(chat_id, 0.0)

    def edited(self, chat_id: int, wait_s: float | None = None) -> None:
        """Note an edit in ``chat_id`` (or Telegram's ``wait_s``): the next one waits."""
        self.next_edit[chat_id] = time.monotonic() + max(self.interval_s, wait_s or 0.0)

    def track(self, application: Application, job_id: str, chat_id: int, message_id: int, text: str) -> None:
        """Follow ``job_id`` whose status message currently says ``text``; starts the poll loop once."""
        self.jobs[job_id] = _Tracked(chat_id, message_id, text)
        if self._task is None or self._task.done():
            self._task = application.create_task(self.run(application), name="telegram-progress")

    async def run(self, application: Application) -> None:
        """Poll until the application stops (its ``stop`` awaits this task)."""
        while application.running and self.jobs:
            try:
                await self.tick(application.bot)
            except Exception:  # a Redis hiccup must not end progress reports for good
                log.exception("progress tick failed")
            await asyncio.sleep(TICK_S)
        self._task = None

    async def tick(self, bot: Bot) -> None:
        """Read every tracked record once and edit the messages whose text or preview changed."""
        ids = list(self.jobs)
        states = await asyncio.to_thread(self._read, ids)
        for job_id, state in zip(ids, states, strict=True):
            tracked = self.jobs.get(job_id)
            if tracked is None:
                continue
            if state is None or state[0].status.finished:
                if state is None or not _awaits_result(state[0]) or tracked.preview_message_id is None:
                    del self.jobs[job_id]  # the sender takes over the status message
                    await self._remove_preview(bot, job_id, tracked)
                continue
            record = state[0]
            text = status_line(*state)
            if not self.may_edit(tracked.chat_id):
                continue
            preview = record.progress.preview_key if record.progress else None
            if preview and preview != tracked.preview_key and self._may_preview(tracked.chat_id):
                await self._show_preview(bot, record, tracked, preview, text)
            elif text != tracked.text:
                await self._edit_text(bot, job_id, tracked, text)

    def _may_preview(self, chat_id: int) -> bool:
        """Whether ``chat_id`` may get a new preview picture now."""
        return time.monotonic() >= self.next_preview.get(chat_id, 0.0)

    async def _edit_text(self, bot: Bot, job_id: str, tracked: _Tracked, text: str) -> None:
        """Put ``text`` on the status message (a message gone ends the tracking)."""
        try:
            await bot.edit_message_text(text, chat_id=tracked.chat_id, message_id=tracked.message_id)
        except RetryAfter as exc:
            self.edited(tracked.chat_id, retry_after_seconds(exc))
            return
        except TelegramError as exc:  # message deleted, chat gone: stop following it
            log.info("progress for job %s stopped: %s", job_id, exc, extra={"job_id": job_id})
            self.jobs.pop(job_id, None)
            await self._remove_preview(bot, job_id, tracked)
            return
        tracked.text = text
        self.edited(tracked.chat_id)

    async def _show_preview(
        self, bot: Bot, record: JobRecord, tracked: _Tracked, key: str, text: str
    ) -> None:
        """Post the preview under ``key`` as the photo status message, or swap the picture of the one
        posted before. An expired or refused preview is skipped (the next one may do)."""
        tracked.preview_key = key
        png = await asyncio.to_thread(self.queue.redis.get, key)
        if not png:
            return
        try:
            if tracked.preview_message_id is None:
                conv = record.request.conversation
                reply = (
                    ReplyParameters(int(conv.reply_to), allow_sending_without_reply=True)
                    if conv.reply_to
                    else None
                )
                sent = await bot.send_photo(
                    tracked.chat_id,
                    png,
                    caption=text,
                    message_thread_id=int(conv.thread_id) if conv.thread_id else None,
                    reply_parameters=reply,
                )
                tracked.preview_message_id = sent.message_id
            else:
                await bot.edit_message_media(
                    InputMediaPhoto(png, caption=text),
                    chat_id=tracked.chat_id,
                    message_id=tracked.preview_message_id,
                )
        except RetryAfter as exc:
            tracked.preview_key = None  # shown at the next chance
            self.edited(tracked.chat_id, retry_after_seconds(exc))
            return
        except TelegramError as exc:
            log.info("job %s: preview not shown: %s", record.id, exc, extra={"job_id": record.id})
        self.edited(tracked.chat_id)
        self.next_preview[tracked.chat_id] = time.monotonic() + self.preview_interval_s

    async def _remove_preview(self, bot: Bot, job_id: str, tracked: _Tracked) -> None:
        """Delete the job's preview message, if it has one (best effort)."""
        if tracked.preview_message_id is None:
            return
        try:
            await bot.delete_message(tracked.chat_id, tracked.preview_message_id)
        except TelegramError as exc:
            log.info("job %s: preview message left: %s", job_id, exc, extra={"job_id": job_id})
        tracked.preview_message_id = None

    def _read(self, ids: list[str]) -> list[tuple[JobRecord, int | None, str | None] | None]:
        out: list[tuple[JobRecord, int | None, str | None] | None] = []
        for job_id in ids:
            try:
                record, position = self.queue.status(job_id)
                out.append((record, position, job_notice(self.queue.redis, record)))
            except JobNotFound:
                out.append(None)
        return out


def _awaits_result(record: JobRecord) -> bool:
    """Whether ``record`` is done and its result not yet posted (for a while at most): its preview
    stays until the picture replaces it."""
    if record.status != JobStatus.DONE or record.delivered_at is not None:
        return False
    return time.time() < (record.finished_at or 0.0) + PREVIEW_LINGER_S
