"""Results on Discord: the upload limit, live previews, the result buttons (U-n / V-n / 🔄 / Info /
Remix), the remix modal and ``/show``.

The real discord.py bot runs against the fake Discord (tests/helpers/fake_discord.py) and the session's
real Celery worker draws and delivers to the same fake; ``send.py`` is also called directly for the
upload-limit cases.
"""

from __future__ import annotations

import io
from collections.abc import Iterator

import pytest
import redis
from PIL import Image

from bots.discord import send as discord_send
from core.delivery import DeliveryContext, DeliveryFailed
from core.job_client import QueueClient
from core.jobs import Conversation, EngineResult, JobRecord, JobRequest, JobStatus
from core.picture_fit import fit_picture
from core.settings import Settings
from tests.helpers.fake_discord import APP_ID, FakeDiscord
from tests.helpers.fake_platforms import running

DEFAULT_LIMIT = 10 * 1024 * 1024


def noisy_png(size: tuple[int, int] = (384, 256)) -> bytes:
    """A PNG that compresses badly (noise): big for its size."""
    out = io.BytesIO()
    Image.effect_noise(size, 80).convert("RGB").save(out, format="PNG")
    return out.getvalue()


def decoded(data: bytes) -> Image.Image:
    """``data`` decoded by Pillow (fails on anything that is not a whole picture)."""
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


# --- fitting a picture under a limit ------------------------------------------------------------


def test_a_picture_under_the_limit_stays_the_png_it_was() -> None:
    png = noisy_png((64, 64))
    fitted = fit_picture(png, DEFAULT_LIMIT)
    assert (fitted.data, fitted.format, fitted.reencoded) == (png, "PNG", False)


@pytest.mark.parametrize("limit", [120_000, 20_000, 3_000])
def test_a_picture_over_the_limit_is_re_encoded_then_shrunk_until_it_fits(limit: int) -> None:
    png = noisy_png()
    assert len(png) > limit
    fitted = fit_picture(png, limit)
    assert fitted.reencoded and fitted.format in ("WEBP", "JPEG")
    assert len(fitted.data) <= limit
    image = decoded(fitted.data)
    assert (image.width, image.height) == (fitted.width, fitted.height)
    assert abs(image.width / image.height - 384 / 256) < 0.05  # the shape is kept
    if limit < 20_000:
        assert image.width < 384  # noise this size does not fit without shrinking


def test_a_side_limit_downscales_even_a_small_file() -> None:
    fitted = fit_picture(noisy_png((600, 200)), DEFAULT_LIMIT, max_side_sum=400)
    assert fitted.width + fitted.height <= 400 and fitted.reencoded


# --- send.py: the interaction's attachment_size_limit ------------------------------------------


@pytest.fixture
def queue(settings: Settings, clean_redis: redis.Redis) -> Iterator[QueueClient]:
    """A queue client on the session's Redis."""
    client = QueueClient(settings)
    yield client
    client.redis.close()


def finished_record(queue: QueueClient, png: bytes, limit: int | None, token: str) -> JobRecord:
    """A finished one-picture DF-GAN job whose paired image is ``png``, asked where uploads may be
    ``limit`` bytes."""
    request = JobRequest(
        prompt="a noisy field",
        engines=["dfgan"],
        steps=2,
        user="discord:555",
        conversation=Conversation(
            platform="discord",
            chat_id="777",
            interaction_token=token,
            application_id=APP_ID,
            attachment_size_limit=limit,
        ),
    )
    record = JobRecord(request=request, seed=7, steps=2, size=64, status=JobStatus.DONE)
    record.pair_key = queue.images.put(record.id, "pair", png)
    record.results = [EngineResult(engine="dfgan", version="v1", seconds=0.1, image_keys=[])]
    queue.jobs.save(record)
    return record


def test_an_oversize_pair_is_re_encoded_under_the_interactions_limit(
    settings: Settings, queue: QueueClient
) -> None:
    png = noisy_png()
    limit = len(png) // 4
    with running(FakeDiscord()) as fake:
        fake.attachment_size_limit = limit
        to_fake = settings.model_copy(update={"discord_api_base": fake.api_base})
        context = DeliveryContext(settings=to_fake, images=queue.images, history=queue.history)
        # Where the conversation does not know the limit, the PNG goes as it is and the fake refuses it:
        # the fake enforces the limit, so the next check can fail.
        unknown = finished_record(queue, png, None, "itok-unknown")
        with pytest.raises(DeliveryFailed, match="413"):
            discord_send.send(unknown, context)
        record = finished_record(queue, png, limit, "itok-limit")
        discord_send.send(record, context)
        [call] = fake.calls_to("POST", f"/webhooks/{APP_ID}/itok-limit")
    assert call.status == 200
    data = call.files["files[0]"]
    assert len(data) <= limit < len(png)
    filename = call.json["attachments"][0]["filename"]
    assert filename.rsplit(".", 1)[1] in ("webp", "jpg") and filename.startswith(f"imaginebot-{record.id}")
    assert decoded(data).format in ("WEBP", "JPEG")
    assert "upload limit" in call.json["content"].splitlines()[-1]
