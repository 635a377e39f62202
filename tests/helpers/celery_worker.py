"""The real Celery worker that runs inside the test (or benchmark) process."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from core.task_contract import QUEUE_DELIVERY, QUEUE_GPU


@contextmanager
def in_thread_worker(app: Any) -> Iterator[Any]:
    """A real Celery worker for ``app`` (solo pool, in a thread of this process) consuming the gpu
    and delivery queues for the block; yields Celery's worker controller."""
    from celery.contrib.testing.worker import start_worker

    with start_worker(
        app,
        pool="solo",
        concurrency=1,
        perform_ping_check=False,
        queues=[QUEUE_GPU, QUEUE_DELIVERY],
        shutdown_timeout=60,
    ) as worker:
        yield worker
