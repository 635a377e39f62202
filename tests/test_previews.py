"""Live previews: during a diffusion run the worker stores a small PNG of the model's current estimate
of the clean picture and names it in the job record's progress (``Progress.preview_key``).

The engine half runs the shipped pixel-space model and the tiny latent Stable Diffusion pipeline (built
from configs) directly; the end-to-end half submits jobs to the session's real Celery worker (real
Redis) and watches the record while it draws. The preview bookkeeping itself uses database 18.
"""

from __future__ import annotations

import io
import time
from pathlib import Path

import numpy as np
import pytest
import redis
from PIL import Image

from core.embedded_redis import EmbeddedRedis
from core.job_client import QueueClient
from core.jobs import PREVIEW_KEY_PREFIX, Conversation, JobRecord, JobRequest, JobStatus
from core.settings import Settings
from tests.helpers.databases import emptied_database
from worker.engines.base import GenerationRequest
from worker.previews import PREVIEW_SIDE, LivePreviews, preview_picture, steps_between


class Collector:
    """A progress callback that takes previews, as the worker's does, and makes every one offered."""

    def __init__(self) -> None:
        self.offered = None
        self.previews: list[tuple[int, list[list[Image.Image]]]] = []

    def offer_preview(self, source) -> None:  # noqa: ANN001 - a PreviewSource
        self.offered = source

    def __call__(self, step: int, total: int) -> bool:
        if self.offered is not None:
            self.previews.append((step, self.offered()))
            self.offered = None
        return False


def pixels(image: Image.Image, size: tuple[int, int] | None = None) -> np.ndarray:
    return np.asarray(image.convert("RGB").resize(size or image.size), dtype=np.float64)


def test_steps_between_previews() -> None:
    assert steps_between(0, 20) == 5 and steps_between(0, 100) == 25  # about a quarter of the run
    assert steps_between(0, 3) == 1  # at least one step apart
    assert steps_between(7, 100) == 7
    assert steps_between(-1, 100) is None


def test_a_preview_picture_is_small_and_shows_every_picture_of_the_job() -> None:
    red, blue = Image.new("RGB", (512, 512), (255, 0, 0)), Image.new("RGB", (512, 512), (0, 0, 255))
    one = preview_picture([red])
    assert one.size == (PREVIEW_SIDE, PREVIEW_SIDE)
    grid = preview_picture([red, blue, red, blue])
    assert grid.size == (PREVIEW_SIDE, PREVIEW_SIDE)
    assert grid.getpixel((10, 10)) == (255, 0, 0) and grid.getpixel((PREVIEW_SIDE - 10, 10)) == (0, 0, 255)
    wide = preview_picture([Image.new("RGB", (128, 72))])
    assert wide.size == (PREVIEW_SIDE, 144)
    latent = preview_picture([Image.new("RGB", (64, 48))])  # at most twice the estimate's size
    assert latent.size == (128, 96)


def test_live_previews_are_stored_only_when_due(redis_server: EmbeddedRedis) -> None:
    client = redis.Redis.from_url(emptied_database(redis_server, 18))
    made: list[int] = []

    def source() -> list[list[Image.Image]]:
        made.append(1)
        return [[Image.new("RGB", (32, 32), (200, 10, 10))], []]

    previews = LivePreviews(client, ["job-a", "job-b"], every=0)  # 20 steps: every 5
    assert previews.keys_at(3, 20) == {}  # nothing offered yet
    previews.offer(source)
    assert previews.keys_at(4, 20) == {} and made == []  # not due: nothing is drawn
    previews.offer(source)
    keys = previews.keys_at(6, 20)
    assert keys == {"job-a": f"{PREVIEW_KEY_PREFIX}job-a:6"} and made == [1]  # job-b's call has none yet
    png = client.get(keys["job-a"])
    assert png is not None and Image.open(io.BytesIO(png)).getpixel((5, 5)) == (200, 10, 10)
    assert 0 < client.ttl(keys["job-a"]) <= 600
    previews.offer(source)
    assert previews.keys_at(9, 20) == keys and made == [1]  # the last preview stays named
    assert previews.keys_at(12, 20) == keys  # due, but nothing new was offered
    previews.offer(source)
    assert previews.keys_at(12, 20)["job-a"].endswith(":12")
    off = LivePreviews(client, ["job-a"], every=-1)
    off.offer(source)
    assert off.keys_at(20, 20) == {} and made == [1, 1]


def test_the_pixel_model_previews_converge_to_the_picture(data_dir: Path) -> None:
    from worker.engines.diffusion import DiffusionEngine

    engine = DiffusionEngine(None, data_dir, device="cpu")  # the shipped pixel-space model
    collector = Collector()
    requests = [GenerationRequest("a red circle", [1, 2], 8, 64), GenerationRequest("a blue square", [3], 8)]
    out = engine.generate(requests, collector)
    assert [step for step, _ in collector.previews] == list(range(1, 9))
    for _, pictures in collector.previews:
        assert [len(p) for p in pictures] == [2, 1]  # per request, one per seed
    first, last = collector.previews[0][1][0][0], collector.previews[-1][1][0][0]
    final = pixels(out[0][0], first.size)
    far, near = np.abs(pixels(first) - final).mean(), np.abs(pixels(last) - final).mean()
    assert near < 10 < far, (near, far)  # the last estimate is the picture; the first is mostly noise


def test_latent_previews_use_a_cheap_projection(tmp_path: Path) -> None:
    from training.diffusion.tiny import build_tiny_pipeline
    from worker.engines.diffusion import DiffusionEngine

    engine = DiffusionEngine(str(build_tiny_pipeline(tmp_path / "tiny")), tmp_path, device="cpu")
    calls: list[int] = []
    decode = engine.pipe.vae.decode
    engine.pipe.vae.decode = lambda *a, **k: calls.append(1) or decode(*a, **k)  # count full decodes
    collector = Collector()
    (images,) = engine.generate([GenerationRequest("a cat", [5, 6], 4, 64)], collector)
    assert len(collector.previews) == 4 and calls == [1]  # one decode: the result's
    (pictures,) = collector.previews[-1][1]
    assert len(pictures) == 2 and pictures[0].size == (32, 32)  # latents: half the side here
    assert pixels(pictures[0]).std() > 1.0  # not blank
    assert len(images) == 2


# --- end to end, through the session's worker ------------------------------------------------------


@pytest.fixture
def client(settings: Settings, celery_worker: object, clean_redis: redis.Redis) -> QueueClient:
    return QueueClient(settings)


def watch(client: QueueClient, engines: list[str], steps: int) -> tuple[JobRecord, dict[str, bytes]]:
    """Submit a job and poll its record until it finishes; returns the final record and the preview
    PNGs its record named while it was running, in order."""
    request = JobRequest(
        prompt="a red circle",
        engines=engines,
        seed=3,
        steps=steps,
        user="cli:preview-tester",
        conversation=Conversation(platform="cli", chat_id="previews"),
    )
    record = client.submit(request)
    seen: dict[str, bytes] = {}
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        record = client.jobs.get(record.id)
        key = record.progress.preview_key if record.progress else None
        if record.status == JobStatus.RUNNING and key and key not in seen:
            seen[key] = client.redis.get(key) or b""
        if record.status.finished:
            return record, seen
        time.sleep(0.01)
    raise TimeoutError(record.status)


def test_a_diffusion_job_shows_previews_before_its_picture(client: QueueClient) -> None:
    record, seen = watch(client, ["diffusion"], steps=100)
    assert record.status == JobStatus.DONE, record.error
    assert seen, "no preview named in the record while the job ran"
    assert all(key.startswith(f"{PREVIEW_KEY_PREFIX}{record.id}:") for key in seen)
    first = Image.open(io.BytesIO(next(iter(seen.values()))))
    first.load()
    assert max(first.size) <= PREVIEW_SIDE
    assert pixels(first).std() > 5.0  # not blank
    png = client.images.get(record.results[0].image_keys[0])
    assert png is not None
    final = pixels(Image.open(io.BytesIO(png)), first.size)
    assert np.abs(pixels(first) - final).mean() > 1.0  # a preview, not the picture


def test_dfgan_sends_no_preview(client: QueueClient) -> None:
    record, seen = watch(client, ["dfgan"], steps=4)
    assert record.status == JobStatus.DONE, record.error
    assert seen == {}
    assert record.progress is None or record.progress.preview_key is None
    assert not list(client.redis.scan_iter(f"{PREVIEW_KEY_PREFIX}{record.id}:*"))
