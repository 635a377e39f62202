"""The paired image is composed when first read, not by the GPU worker (core/pairs.py).

The worker stores each engine's pictures with the record's "done"; the pair's key is named in the
record but holds nothing until someone reads it through :meth:`core.store.ImageStore.get`. Real Redis
(database 22 of the session's server) and the real generate task body with the real DF-GAN engine.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

import worker.generate as generate
from core.embedded_redis import EmbeddedRedis
from core.job_client import QueueClient
from core.jobs import Conversation, JobRecord, JobStatus
from core.pairs import pair_image
from core.validation import request_from_text
from tests.helpers.databases import emptied_database
from tests.helpers.settings import make_settings
from worker.runtime import Runtime


@pytest.fixture
def drawn(redis_server: EmbeddedRedis, data_dir: Path, celery_app: Any) -> tuple[QueueClient, JobRecord]:
    """A DF-GAN job of two pictures, drawn by the generate task body (no pair read yet)."""
    settings = make_settings(emptied_database(redis_server, 22), data_dir)
    client = QueueClient(settings)
    request = request_from_text(
        "a red circle --engine dfgan --seed 5 --n 2",
        settings,
        "web:pairs",
        Conversation(platform="web", chat_id="pairs-chat"),
    )
    job = client.submit(request)
    assert generate.run_generate(Runtime(settings, celery_app), job.id).ran == [job.id]
    return client, client.jobs.get(job.id)


def test_the_worker_stores_the_pictures_and_the_pair_is_composed_on_first_read(
    drawn: tuple[QueueClient, JobRecord],
) -> None:
    client, record = drawn
    assert record.status == JobStatus.DONE and record.pair_key is not None
    keys = [key for result in record.results for key in result.image_keys]
    assert len(keys) == 2 and all(client.redis.exists(key) for key in keys)  # stored with "done"
    assert not client.redis.exists(record.pair_key)  # not composed on the worker

    png = client.images.get(record.pair_key)

    assert png is not None
    assert client.redis.get(record.pair_key) == png  # stored for the next reader
    pair = Image.open(io.BytesIO(png))
    assert pair.info.get("parameters", "").startswith("a red circle")  # the pair's metadata
    pictures = [[Image.open(io.BytesIO(client.redis.get(key))) for key in keys]]
    assert pair.tobytes() == pair_image(record, pictures).tobytes()  # the engines' pictures, labelled


def test_no_pair_once_a_picture_expired_or_for_a_job_not_done(drawn: tuple[QueueClient, JobRecord]) -> None:
    client, record = drawn
    assert record.pair_key is not None
    client.redis.delete(record.results[0].image_keys[1])
    assert client.images.get(record.pair_key) is None
    assert not client.redis.exists(record.pair_key)

    failed = JobRecord(request=record.request, seed=1, steps=1, size=64, status=JobStatus.FAILED)
    client.jobs.save(failed)
    assert client.images.get(client.images.key(failed.id, "pair")) is None
    assert client.images.get(client.images.key("0" * 16, "pair")) is None  # no such job
