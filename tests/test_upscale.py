"""The ``upscale`` engine (the Upscale ×2 button): a configured diffusers upscaler redraws the picture
at twice its size, and with none configured a plain Lanczos resize ×2 says so in its label.

The upscaler is a tiny ``StableDiffusionUpscalePipeline`` (×4, random weights) built from configs into
a temporary folder. Jobs go through the real worker: the session's Celery worker (no upscaler
configured) and the worker's generate body on database 18 with the upscaler configured.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import redis
from PIL import Image

from core.embedded_redis import EmbeddedRedis
from core.job_client import QueueClient
from core.jobs import Conversation, JobRecord, JobRequest, JobStatus
from core.settings import Settings
from core.uploads import UploadStore
from tests.helpers.databases import emptied_database
from tests.helpers.settings import make_settings
from tests.helpers.tiny_models import build_tiny_upscaler
from worker.engines.base import GenerationCancelled, GenerationRequest
from worker.engines.upscale import (
    PLAIN_VERSION,
    DiffusersUpscaler,
    PlainUpscaler,
    UpscalerNotAvailable,
    doubled,
    load_upscaler,
)


def picture() -> Image.Image:
    image = Image.new("RGB", (64, 48), (250, 250, 250))
    image.paste((20, 160, 40), (10, 10, 40, 30))
    return image


def png(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"), dtype=np.float64)


@pytest.fixture(scope="module")
def upscaler_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from training.diffusion.tiny import build_tiny_pipeline

    root = tmp_path_factory.mktemp("upscaler")
    return build_tiny_upscaler(build_tiny_pipeline(root / "tiny"), root / "tiny-x4-upscaler")


def test_without_an_upscaler_the_picture_is_resized_and_labelled_so() -> None:
    engine = load_upscaler(None)
    assert isinstance(engine, PlainUpscaler)
    assert engine.info.version == PLAIN_VERSION == "plain resize ×2, no upscaler configured"
    (images,) = engine.generate([GenerationRequest("a green square", [1], 4, image=picture())])
    assert images[0].size == (128, 96)
    assert np.array_equal(pixels(images[0]), pixels(picture().resize((128, 96), Image.Resampling.LANCZOS)))


def test_the_upscaler_redraws_the_picture_at_twice_its_size(upscaler_folder: Path) -> None:
    engine = load_upscaler(str(upscaler_folder), "cpu")
    assert isinstance(engine, DiffusersUpscaler)
    assert engine.info.version == "tiny-x4-upscaler"
    assert engine.info.extra["method"] == "StableDiffusionUpscalePipeline ×4, resized to ×2"
    steps: list[tuple[int, int]] = []
    request = GenerationRequest("a green square", [1, 2], 3, image=picture())
    (images,) = engine.generate([request], progress=lambda step, total: steps.append((step, total)) or False)
    assert [image.size for image in images] == [(128, 96), (128, 96)]
    assert steps == [(i, 6) for i in range(1, 7)]
    plain = pixels(doubled(picture()))
    assert np.abs(pixels(images[0]) - plain).mean() > 10  # redrawn, not resized
    assert not np.array_equal(pixels(images[0]), pixels(images[1]))  # each seed its own
    (again,) = engine.generate([GenerationRequest("a green square", [1], 3, image=picture())])
    assert np.array_equal(pixels(again[0]), pixels(images[0]))  # same seed, same picture
    with pytest.raises(GenerationCancelled):
        engine.generate([request], progress=lambda step, total: step >= 2)


def test_an_upscaler_that_cannot_be_used_is_said_plainly(tmp_path: Path) -> None:
    from training.diffusion.tiny import build_tiny_pipeline

    with pytest.raises(UpscalerNotAvailable, match="neither a diffusers folder nor in the local"):
        load_upscaler(str(tmp_path / "missing"))
    with pytest.raises(UpscalerNotAvailable, match="StableDiffusionPipeline pipeline, not one of"):
        load_upscaler(str(build_tiny_pipeline(tmp_path / "not-an-upscaler")))


# --- through the worker ----------------------------------------------------------------------------


def upscale_request(key: str) -> JobRequest:
    return JobRequest(
        prompt="a green square",
        engines=["upscale"],
        seed=5,
        steps=3,
        image_key=key,
        user="cli:upscale-tester",
        conversation=Conversation(platform="cli", chat_id="upscale"),
    )


def upscaled(client: QueueClient, record: JobRecord) -> Image.Image:
    assert record.status == JobStatus.DONE, record.error
    (result,) = record.results
    assert record.pair_key is not None and client.images.get(record.pair_key) is not None
    data = client.images.get(result.image_keys[0])
    assert data is not None
    return Image.open(io.BytesIO(data))


def test_the_worker_upscales_with_a_plain_resize_when_none_is_configured(
    settings: Settings, celery_worker: object, clean_redis: redis.Redis
) -> None:
    client = QueueClient(settings)
    key = UploadStore(client.redis, settings.result_ttl_s).put(png(picture()))
    record = client.wait(client.submit(upscale_request(key)).id, timeout_s=300, delivered=False)
    image = upscaled(client, record)
    assert image.size == (128, 96)
    assert record.results[0].version == PLAIN_VERSION
    assert not record.results[0].text_only


def test_the_worker_upscales_with_the_configured_upscaler(
    redis_server: EmbeddedRedis, tmp_path: Path, upscaler_folder: Path
) -> None:
    """The worker's generate body (claim, draw, store, finish) on database 18, with the upscaler set."""
    from worker.app import create_app
    from worker.generate import run_generate
    from worker.runtime import Runtime

    settings = make_settings(emptied_database(redis_server, 18), tmp_path, upscaler=str(upscaler_folder))
    client = QueueClient(settings)
    key = UploadStore(client.redis, settings.result_ttl_s).put(png(picture()))
    job = client.submit(upscale_request(key))
    runtime = Runtime(settings, create_app(settings))
    assert runtime.engines.get("upscale").info.version == "tiny-x4-upscaler"
    outcome = run_generate(runtime, job.id)
    assert outcome.ran == [job.id]
    record = client.jobs.get(job.id)
    image = upscaled(client, record)
    assert image.size == (128, 96)
    assert record.results[0].version == "tiny-x4-upscaler"
    assert np.abs(pixels(image) - pixels(doubled(picture()))).mean() > 10


def test_the_upscale_button_draws_that_picture_twice_as_large(
    settings: Settings, celery_worker: object, clean_redis: redis.Redis
) -> None:
    """From chat: a job's picture 2, Upscale ×2 under it, the worker's result (the plain resize here)."""
    from core.conversation import Caller, ConversationService, FromText, Imagine, Queued
    from core.result_buttons import read_button

    service = ConversationService(settings, QueueClient(settings))
    me: Caller = service.caller("upscale-chat", Conversation(platform="web", chat_id="upscale-chat"))

    def drawn(reply: object) -> JobRecord:
        assert isinstance(reply, Queued), reply
        return service.queue.wait(reply.record.id, timeout_s=300, delivered=False)

    grid = drawn(service.handle(me, FromText(Imagine, "a red circle --n 2 --seed 3 --engine diffusion")))
    assert grid.status == JobStatus.DONE, grid.error
    source = service.queue.images.get(grid.results[0].image_keys[1])
    assert source is not None
    record = drawn(service.handle(me, read_button(f"up:{grid.id}:1:diffusion")))
    image = upscaled(service.queue, record)
    assert record.results[0].version == PLAIN_VERSION
    expected = doubled(Image.open(io.BytesIO(source)).convert("RGB"))
    assert image.size == expected.size
    assert np.abs(pixels(image) - pixels(expected)).mean() < 1.0  # that picture, not another one
