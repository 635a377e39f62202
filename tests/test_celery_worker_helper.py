"""The in-thread Celery worker helper refuses a second worker in one process: Celery stops a test
worker through a process-global flag, so a second one's end would stop the session's worker too."""

from __future__ import annotations

from typing import Any

import pytest

from core.settings import Settings
from core.task_contract import PING_TASK, QUEUE_GPU, make_producer
from tests.helpers.celery_worker import in_thread_worker
from tests.helpers.waiting import eventually


def test_a_second_in_thread_worker_is_refused_and_the_first_keeps_working(
    celery_app: Any, celery_worker: Any, settings: Settings
) -> None:
    import redis

    with pytest.raises(RuntimeError, match="already running"):
        with in_thread_worker(celery_app):
            pass
    client = redis.Redis.from_url(settings.redis_url)
    client.delete("ib:ping:helper")
    make_producer(settings.redis_url).send_task(PING_TASK, args=["ib:ping:helper"], queue=QUEUE_GPU)
    assert eventually(lambda: client.get("ib:ping:helper"), timeout_s=30, what="the session worker's ping")
