"""A Redis error while the GPU worker reports progress is not an engine failure."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import redis

import worker.generate as generate
from core.embedded_redis import EmbeddedRedis
from core.job_client import QueueClient
from core.jobs import Conversation, JobStatus
from core.store import JobStore
from core.validation import request_from_text
from tests.helpers.settings import make_settings
from worker.runtime import Runtime


def test_a_redis_error_in_the_progress_callback_does_not_fail_the_job(
    redis_server: EmbeddedRedis, data_dir: Path, celery_app: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = redis_server.url.rsplit("/", 1)[0] + "/8"
    redis.Redis.from_url(url).flushdb()
    settings = make_settings(url, data_dir)
    client = QueueClient(settings)
    request = request_from_text(
        "a red circle --engine diffusion --steps 8 --seed 1",
        settings,
        "web:progress",
        Conversation(platform="web", chat_id="progress-chat"),
    )
    job = client.submit(request)
    reports = []

    def redis_gone(*args: object, **kwargs: object) -> None:
        reports.append(args)
        raise redis.ConnectionError("Error 111 connecting to 127.0.0.1. Connection refused.")

    monkeypatch.setattr(JobStore, "renew", redis_gone)  # the progress write (it renews the lease)
    monkeypatch.setattr(generate, "PROGRESS_WRITE_S", 0.0)  # report every step
    outcome = generate.run_generate(Runtime(settings, celery_app), job.id)

    assert reports, "the engine never reported progress"
    record = client.jobs.get(job.id)
    assert outcome.ran == [job.id]
    assert record.status == JobStatus.DONE, record.error
    assert record.pair_key is not None
