"""The Discord front-end against a fake Discord on 127.0.0.1 (tests/fake_discord.py).

Delivery tests call ``bots.discord.send`` directly and through the session's real Celery worker; the
bot tests run the real discord.py client (gateway + REST) in a thread against the same fake.
"""

from __future__ import annotations

import io
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from PIL import Image

from bots.discord import send as discord_send
from core.delivery import DeliveryContext, DeliveryFailed, DeliveryRetry
from core.jobs import Conversation, EngineResult, JobRecord, JobRequest, JobStatus
from core.queue import QueueClient
from core.settings import Settings
from tests.conftest import make_settings
from tests.fake_discord import APP_ID, FakeDiscord, snowflake

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
BOT_TOKEN = "fake-bot-token"


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeDiscord]:
    """The fake Discord for this module."""
    server = FakeDiscord().start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def discord_settings(settings: Settings, data_dir: Path, fake: FakeDiscord) -> Settings:
    """The session's settings pointed at the fake Discord."""
    return make_settings(
        settings.redis_url or "",
        data_dir,
        discord_api_base=fake.api_base,
        discord_token=BOT_TOKEN,
        admin_ids="discord:424242",
        progress_interval_s=0.2,
    )


@pytest.fixture(scope="module")
def worker_to_fake(celery_app, celery_worker, discord_settings: Settings) -> Iterator[None]:  # noqa: ANN001
    """Point the session worker's delivery at the fake Discord for this module, then restore it."""
    from worker.runtime import runtime_for

    rt = runtime_for(celery_app)
    saved = rt.settings
    rt.settings = saved.model_copy(
        update={"discord_api_base": discord_settings.discord_api_base, "discord_token": BOT_TOKEN}
    )
    yield
    rt.settings = saved


def png_bytes(color: str = "red") -> bytes:
    """A small valid PNG."""
    out = io.BytesIO()
    Image.new("RGB", (8, 4), color).save(out, format="PNG")
    return out.getvalue()


def assert_png(data: bytes) -> None:
    """``data`` is a PNG that Pillow can decode."""
    assert data.startswith(PNG_MAGIC)
    with Image.open(io.BytesIO(data)) as image:
        image.load()
        assert image.width > 0 and image.height > 0


def discord_record(
    queue: QueueClient,
    status: JobStatus = JobStatus.DONE,
    token: str | None = "itok-direct",
    age_s: float = 0.0,
    user_id: str = "555",
    thread_id: str | None = None,
) -> JobRecord:
    """A finished Discord job stored in Redis (with its paired PNG when done)."""
    request = JobRequest(
        prompt="a red circle",
        engines=["dfgan"],
        steps=2,
        user=f"discord:{user_id}",
        conversation=Conversation(
            platform="discord",
            chat_id="777",
            thread_id=thread_id,
            interaction_token=token,
            application_id=APP_ID if token else None,
        ),
    )
    record = JobRecord(request=request, seed=7, steps=2, size=64, status=status)
    record.created_at -= age_s
    if status == JobStatus.DONE:
        record.pair_key = queue.images.put(record.id, "pair", png_bytes())
        record.results = [EngineResult(engine="dfgan", version="v1", seconds=0.1, image_keys=[])]
    elif status == JobStatus.FAILED:
        record.error = "the engine ran out of memory"
    queue.jobs.save(record)
    return record


@pytest.fixture
def queue(discord_settings: Settings, clean_redis: redis.Redis) -> Iterator[QueueClient]:
    """A queue client on the session's Redis."""
    client = QueueClient(discord_settings)
    yield client
    client.redis.close()


def context(settings: Settings, queue: QueueClient) -> DeliveryContext:
    """What the deliver task hands a sender."""
    return DeliveryContext(settings=settings, images=queue.images, history=queue.history)


# --- send.py against the fake REST API ---------------------------------------------------------


def test_result_goes_to_the_interaction_follow_up_with_png_and_buttons(
    fake: FakeDiscord, discord_settings: Settings, queue: QueueClient
) -> None:
    record = discord_record(queue, token="itok-followup")
    discord_send.send(record, context(discord_settings, queue))
    [call] = fake.calls_to("POST", f"/webhooks/{APP_ID}/itok-followup")
    assert_png(call.files["files[0]"])
    assert "a red circle" in call.json["content"] and "seed 7" in call.json["content"]
    assert call.json["attachments"][0]["id"] == 0
    ids = [b["custom_id"] for row in call.json["components"] for b in row["components"]]
    assert f"ib:rr:{record.id}" in ids and f"ib:info:{record.id}" in ids
    assert all("circle" not in i for i in ids)
    assert "Authorization" not in call.headers  # webhooks are authorised by their token


def test_old_job_falls_back_to_a_channel_message_mentioning_the_user(
    fake: FakeDiscord, discord_settings: Settings, queue: QueueClient
) -> None:
    record = discord_record(queue, token="itok-old", age_s=15 * 60, thread_id="888")
    discord_send.send(record, context(discord_settings, queue))
    assert not fake.calls_to("POST", "/webhooks/" + APP_ID + "/itok-old")
    [call] = [c for c in fake.calls_to("POST", "/channels/888/messages")]
    assert call.headers["Authorization"] == f"Bot {BOT_TOKEN}"
    assert call.json["content"].startswith("<@555> ")
    assert call.json["allowed_mentions"] == {"users": ["555"]}
    assert_png(call.files["files[0]"])


def test_expired_token_404_falls_back_to_the_channel(
    fake: FakeDiscord, discord_settings: Settings, queue: QueueClient
) -> None:
    fake.expired_tokens.add("itok-gone")
    record = discord_record(queue, token="itok-gone", user_id="556")
    discord_send.send(record, context(discord_settings, queue))
    assert [c.status for c in fake.calls_to("POST", f"/webhooks/{APP_ID}/itok-gone")] == [404]
    posts = [c for c in fake.calls_to("POST", "/channels/777/messages") if "<@556>" in c.json["content"]]
    assert len(posts) == 1


def test_rate_limit_raises_retry_with_discords_wait(
    fake: FakeDiscord, discord_settings: Settings, queue: QueueClient
) -> None:
    fake.rate_limit_followups = 1
    record = discord_record(queue, token="itok-429")
    with pytest.raises(DeliveryRetry) as info:
        discord_send.send(record, context(discord_settings, queue))
    assert info.value.retry_after == 1.5


def test_unreachable_discord_is_retried_and_refusals_are_final(
    discord_settings: Settings, queue: QueueClient, data_dir: Path
) -> None:
    closed = make_settings(
        discord_settings.redis_url or "", data_dir, discord_api_base="http://127.0.0.1:9/api/v10"
    )
    record = discord_record(queue, token="itok-x")
    with pytest.raises(DeliveryRetry) as info:
        discord_send.send(record, context(closed, queue))
    assert info.value.retry_after is None
    # No interaction token and no bot token: nowhere to post.
    tokenless = discord_record(queue, token=None)
    with pytest.raises(DeliveryFailed):
        discord_send.send(tokenless, context(closed, queue))


def test_failed_job_is_reported_as_text(
    fake: FakeDiscord, discord_settings: Settings, queue: QueueClient
) -> None:
    record = discord_record(queue, status=JobStatus.FAILED, token="itok-failed")
    discord_send.send(record, context(discord_settings, queue))
    [call] = fake.calls_to("POST", f"/webhooks/{APP_ID}/itok-failed")
    assert "ran out of memory" in call.json["content"] and not call.files


# --- through the real deliver task ---------------------------------------------------------------


def test_worker_delivers_once_after_a_429(
    fake: FakeDiscord, discord_settings: Settings, queue: QueueClient, worker_to_fake: None
) -> None:
    token = "itok-" + uuid.uuid4().hex[:8]
    request = JobRequest(
        prompt="a blue square",
        engines=["dfgan"],
        steps=2,
        user="discord:600",
        conversation=Conversation(
            platform="discord", chat_id=snowflake(), interaction_token=token, application_id=APP_ID
        ),
    )
    fake.rate_limit_followups = 1
    record = queue.submit(request)
    done = queue.wait(record.id, timeout_s=60)
    assert done.status == JobStatus.DONE
    posts = fake.calls_to("POST", f"/webhooks/{APP_ID}/{token}")
    assert [c.status for c in posts] == [429, 200]
    assert posts[1].at - posts[0].at >= 1.4  # waited for Discord's retry_after
    assert_png(posts[1].files["files[0]"])
    time.sleep(0.5)
    assert len(fake.calls_to("POST", f"/webhooks/{APP_ID}/{token}")) == 2  # never posted twice
