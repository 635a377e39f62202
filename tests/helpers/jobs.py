"""Waiting on a job's record."""

from __future__ import annotations

import time

from core.job_client import QueueClient
from core.jobs import Conversation, JobRecord
from core.validation import request_from_text


def delivered_record(queue: QueueClient, job_id: str, timeout_s: float, interval_s: float = 0.1) -> JobRecord:
    """Job ``job_id``'s record once it is finished and its delivery is over (posted, or given up on);
    fail naming the record as it stands after ``timeout_s`` seconds."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        record = queue.jobs.get(job_id)
        if record.status.finished and record.delivered_at is not None:
            return record
        time.sleep(interval_s)
    raise AssertionError(f"job {job_id} not delivered in {timeout_s} s: {queue.jobs.get(job_id)}")


def drawn_from_text(queue: QueueClient, text: str, user: str, timeout_s: float = 300.0) -> JobRecord:
    """Queue ``text`` (``/imagine``'s words and flags) as ``user`` from the command line and return
    the job's record once it is drawn (not waiting for its delivery)."""
    request = request_from_text(text, queue.settings, user, Conversation(platform="cli", chat_id=user))
    return queue.wait(queue.submit(request).id, timeout_s=timeout_s, delivered=False)
