"""Keeps each pending job's "Queued…" status message up to date from the job records in Redis.

The bot process polls the records of the jobs it queued and edits their status messages, at most
once every ``progress_interval_s`` per chat (Telegram limits how often a bot may write to one chat).
The delivery worker removes the status message when the result is posted; this only tracks jobs
until they finish.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

from telegram import Bot
from telegram.error import RetryAfter, TelegramError
from telegram.ext import Application

from bots.telegram.api import retry_after_seconds
from core.conversation.status import status_line
from core.errors import JobNotFound
from core.heartbeats import job_notice
from core.job_client import QueueClient
from core.jobs import JobRecord

log = logging.getLogger(__name__)
TICK_S = 0.25


@dataclass
class _Tracked:
    chat_id: int
    message_id: int
    text: str


class ProgressTracker:
    """Status messages of this bot's pending jobs, edited as their records change."""

    def __init__(self, queue: QueueClient, interval_s: float) -> None:
        self.queue = queue
        self.interval_s = interval_s
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
        """Read every tracked record once and edit the messages whose text changed."""
        ids = list(self.jobs)
        states = await asyncio.to_thread(self._read, ids)
        for job_id, state in zip(ids, states, strict=True):
            tracked = self.jobs.get(job_id)
            if tracked is None:
                continue
            if state is None or state[0].status.finished:
                del self.jobs[job_id]  # gone, or finished: the sender takes over the message
                continue
            text = status_line(*state)
            if text == tracked.text or not self.may_edit(tracked.chat_id):
                continue
            try:
                await bot.edit_message_text(text, chat_id=tracked.chat_id, message_id=tracked.message_id)
            except RetryAfter as exc:
                self.edited(tracked.chat_id, retry_after_seconds(exc))
                continue
            except TelegramError as exc:  # message deleted, chat gone: stop following it
                log.info("progress for job %s stopped: %s", job_id, exc, extra={"job_id": job_id})
                del self.jobs[job_id]
                continue
            tracked.text = text
            self.edited(tracked.chat_id)

    def _read(self, ids: list[str]) -> list[tuple[JobRecord, int | None, str | None] | None]:
        out: list[tuple[JobRecord, int | None, str | None] | None] = []
        for job_id in ids:
            try:
                record, position = self.queue.status(job_id)
                out.append((record, position, job_notice(self.queue.redis, record)))
            except JobNotFound:
                out.append(None)
        return out
