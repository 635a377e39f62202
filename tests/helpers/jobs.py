"""Waiting on a job's record."""

from __future__ import annotations

import time

from core.job_client import QueueClient
from core.jobs import JobRecord


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
