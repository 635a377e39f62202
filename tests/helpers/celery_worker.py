"""The real Celery worker that runs inside the test (or benchmark) process."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from core.task_contract import QUEUE_DELIVERY, QUEUE_GPU

_running = threading.Lock()


@contextmanager
def in_thread_worker(app: Any) -> Iterator[Any]:
    """A real Celery worker for ``app`` (solo pool, in a thread of this process) consuming the gpu
    and delivery queues for the block; yields Celery's worker controller.

    At most one at a time in a process: Celery stops its test worker by setting the process-global
    ``celery.worker.state.should_terminate``, so leaving a second one's block would stop the first
    too (every later test that needs it would then wait in vain). A second one raises RuntimeError;
    use the session's ``celery_worker`` fixture, or a worker process, instead.
    """
    from celery.contrib.testing.worker import start_worker

    if not _running.acquire(blocking=False):
        raise RuntimeError(
            "an in-thread Celery worker is already running in this process; stopping a second one "
            "would stop it too (use the celery_worker fixture or a worker process)"
        )
    try:
        with start_worker(
            app,
            pool="solo",
            concurrency=1,
            perform_ping_check=False,
            queues=[QUEUE_GPU, QUEUE_DELIVERY],
            shutdown_timeout=60,
        ) as worker:
            yield worker
    finally:
        _running.release()
