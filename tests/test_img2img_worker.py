"""Image-to-image through the real queue: the upload goes into Redis by key, a real Celery worker
fetches it, the diffusion engine draws from it and DF-GAN is recorded (and labelled) as text only."""

from __future__ import annotations

import io

import pytest
import redis
from PIL import Image

from core.job_client import QueueClient
from core.jobs import Conversation, JobRecord, JobRequest, JobStatus
from core.settings import Settings
from core.uploads import UploadStore


def picture() -> bytes:
    image = Image.new("RGB", (80, 60), (250, 250, 250))
    image.paste((20, 160, 40), (20, 10, 60, 50))
    buf = io.BytesIO()
    image.save(buf, format="JPEG")
    return buf.getvalue()


def run(client: QueueClient, image_key: str | None, strength: float | None, seed: int = 11) -> JobRecord:
    request = JobRequest(
        prompt="a green square",
        engines=["dfgan", "diffusion"],
        seed=seed,
        steps=4,
        image_key=image_key,
        strength=strength,
        user="cli:img2img-tester",
        conversation=Conversation(platform="cli", chat_id="img2img"),
    )
    record = client.submit(request)
    return client.wait(record.id, timeout_s=300, delivered=False)


def diffusion_png(client: QueueClient, record: JobRecord) -> bytes:
    (result,) = [r for r in record.results if r.engine == "diffusion"]
    png = client.images.get(result.image_keys[0])
    assert png is not None
    return png


@pytest.fixture
def client(settings: Settings, celery_worker: object, clean_redis: redis.Redis) -> QueueClient:
    return QueueClient(settings)


def test_a_job_draws_from_its_upload_dfgan_says_text_only(client: QueueClient, settings: Settings) -> None:
    key = UploadStore(client.redis, settings.result_ttl_s).put(picture())
    first = run(client, key, 0.5)
    assert first.status == JobStatus.DONE, first.error
    marks = {r.engine: r.text_only for r in first.results}
    assert marks == {"dfgan": True, "diffusion": False}
    again = run(client, key, 0.5)
    assert diffusion_png(client, again) == diffusion_png(client, first)  # same seed, image, strength
    stronger = run(client, key, 1.0)
    text_only = run(client, None, None)
    assert diffusion_png(client, stronger) != diffusion_png(client, first)
    assert diffusion_png(client, text_only) != diffusion_png(client, first)
    assert {r.engine: r.text_only for r in text_only.results} == {"dfgan": False, "diffusion": False}


def test_an_expired_upload_fails_the_job_clearly(client: QueueClient, settings: Settings) -> None:
    key = UploadStore(client.redis, settings.result_ttl_s).put(picture())
    client.redis.delete(key)
    record = run(client, key, 0.5)
    assert record.status == JobStatus.FAILED
    assert record.error is not None and "has expired; send it again" in record.error
