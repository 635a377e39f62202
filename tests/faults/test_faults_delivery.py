"""Exactly-once delivery under faults, through the session's real Celery worker, real Redis and the
fake platform servers with fault injection: a lease left by a dead worker, an upload that times out
but landed, a dropped connection, a platform that never accepts, and the atomic queue cap.
"""

from __future__ import annotations

import io
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

import bots.telegram.send as telegram_send
from core.embedded_redis import EmbeddedRedis
from core.errors import InputError
from core.job_client import QueueClient
from core.jobs import Conversation, JobRecord, JobRequest, JobStatus
from core.settings import Settings
from core.store import PENDING_KEY
from core.task_contract import DELIVER_TASK, QUEUE_DELIVERY
from tests.helpers.databases import emptied_database
from tests.helpers.fake_discord import APP_ID, FakeDiscord
from tests.helpers.fake_platforms import running, worker_posting_to
from tests.helpers.fake_telegram import FakeTelegram, Faults
from tests.helpers.jobs import delivered_record
from tests.helpers.settings import make_settings
from worker.deliver import journal_key, lock_key

TOKEN = "123:FAULTS"
WAIT_S = 90.0


@pytest.fixture(scope="module")
def telegram() -> Iterator[FakeTelegram]:
    with running(FakeTelegram(TOKEN)) as server:
        yield server


@pytest.fixture(scope="module")
def discord() -> Iterator[FakeDiscord]:
    with running(FakeDiscord()) as server:
        yield server


@pytest.fixture(scope="module")
def worker(
    settings: Settings, celery_worker: Any, telegram: FakeTelegram, discord: FakeDiscord
) -> Iterator[QueueClient]:
    """The session's worker posts to the fakes; a short read timeout makes a stall cheap to test."""
    with worker_posting_to(settings, telegram=telegram, discord=discord) as mp:
        mp.setattr(telegram_send, "READ_TIMEOUT_S", 1.0)
        yield QueueClient(settings)


def png_bytes() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (128, 64), (200, 40, 40)).save(out, "PNG")
    return out.getvalue()


def finished_job(queue: QueueClient, conversation: Conversation, age_s: float = 0.0) -> JobRecord:
    """A drawn job, stored as a GPU worker leaves it: DONE with its paired PNG, not yet delivered."""
    request = JobRequest(
        prompt="a red circle",
        engines=["dfgan"],
        user=f"{conversation.platform}:42",
        conversation=conversation,
    )
    record = JobRecord(request=request, seed=7, steps=2, size=64, status=JobStatus.DONE)
    record.created_at -= age_s
    record.finished_at = time.time()
    record.pair_key = queue.images.put(record.id, "pair", png_bytes())
    queue.jobs.save(record)
    return record


def deliver(queue: QueueClient, record: JobRecord) -> None:
    queue.producer.send_task(DELIVER_TASK, args=[record.id], queue=QUEUE_DELIVERY)


def delivered(queue: QueueClient, job_id: str) -> JobRecord:
    """The job's record once its delivery is over (bounded wait)."""
    return delivered_record(queue, job_id, WAIT_S, interval_s=0.05)


def finish_and_deliver(queue: QueueClient, conversation: Conversation) -> tuple[JobRecord, JobRecord]:
    """A job finished for ``conversation`` and handed to the delivery worker: its record before
    delivery and once delivery is over."""
    record = finished_job(queue, conversation)
    deliver(queue, record)
    return record, delivered(queue, record.id)


@contextmanager
def faults_on(server: FakeTelegram | FakeDiscord, faults: Faults) -> Iterator[None]:
    """``server`` injects ``faults`` for the block only."""
    server.faults = faults
    try:
        yield
    finally:
        server.faults = None


def journal(queue: QueueClient, job_id: str) -> dict[str, str]:
    return {k.decode(): v.decode() for k, v in queue.redis.hgetall(journal_key(job_id)).items()}


def test_a_lease_left_by_a_dead_delivery_worker_leads_to_a_retry_after_it_lapses(
    worker: QueueClient,
) -> None:
    chat = "lease-" + uuid.uuid4().hex[:8]
    record = finished_job(worker, Conversation(platform="web", chat_id=chat))
    # A delivery worker took the lease and was SIGKILLed: its key stays until the TTL runs out.
    worker.redis.set(lock_key(record.id), "dead-worker", px=3000)
    deliver(worker, record)
    done = delivered(worker, record.id)
    assert done.delivered_at is not None
    events = [e for e in worker.history.read("web", chat) if e.get("job_id") == record.id]
    assert len(events) == 1
    print(f"\nFIGURES lease: delivered {done.delivered_at - record.finished_at:.1f} s after the job finished")


def test_a_timed_out_telegram_upload_that_landed_is_not_posted_again(
    worker: QueueClient, telegram: FakeTelegram
) -> None:
    chat = 70_001
    conversation = Conversation(platform="telegram", chat_id=str(chat), reply_to="11", status_message_id="12")
    with faults_on(telegram, Faults(methods=("sendPhoto",), rate_stall=1.0, stall_s=8.0, limit=1)):
        record, _ = finish_and_deliver(worker, conversation)
    photos = telegram.find(lambda c: c.method == "sendPhoto" and c.params["chat_id"] == chat)
    assert len(photos) == 1 and photos[0].processed  # Telegram has it: exactly one post
    note = telegram.wait_for(
        lambda c: (
            c.method == "editMessageText" and c.params["chat_id"] == chat and c.params["message_id"] == 12
        )
    )
    assert "did not confirm" in note.params["text"]
    assert f"rr:{record.id}" in note.callback_data
    assert journal(worker, record.id)["state"] == "unconfirmed"


def test_a_dropped_discord_channel_post_is_sent_again_with_its_nonce_and_posted_once(
    worker: QueueClient, discord: FakeDiscord
) -> None:
    channel = "880001"
    conversation = Conversation(platform="discord", chat_id=channel)  # no interaction: channel post
    with faults_on(discord, Faults(methods=("post",), rate_drop=1.0, limit=1)):
        record, _ = finish_and_deliver(worker, conversation)
    posts = discord.calls_to("POST", f"/channels/{channel}/messages")
    assert len(posts) == 2 and all(p.json["nonce"] == record.id for p in posts)
    assert len(discord.posted(lambda c: c.path == f"/channels/{channel}/messages")) == 1


def test_an_unanswered_discord_follow_up_is_not_repeated_and_the_original_answer_says_so(
    worker: QueueClient, discord: FakeDiscord
) -> None:
    token = "itok-stall-" + uuid.uuid4().hex[:6]
    conversation = Conversation(
        platform="discord", chat_id="880002", interaction_token=token, application_id=APP_ID
    )
    with faults_on(discord, Faults(methods=("post",), rate_drop=1.0, limit=1)):
        record, _ = finish_and_deliver(worker, conversation)
    assert len(discord.calls_to("POST", f"/webhooks/{APP_ID}/{token}")) == 1
    [edit] = discord.calls_to("PATCH", f"/webhooks/{APP_ID}/{token}/messages/@original")
    assert "did not confirm" in edit.json["content"]
    assert journal(worker, record.id)["state"] == "unconfirmed"


def test_delivery_gives_up_after_its_budget_marks_the_job_failed_and_tells_the_user(
    worker: QueueClient, telegram: FakeTelegram
) -> None:
    chat = 70_002
    conversation = Conversation(platform="telegram", chat_id=str(chat), reply_to="21")
    with faults_on(telegram, Faults(methods=("sendPhoto",), rate_429=1.0, retry_after=1)):
        _, done = finish_and_deliver(worker, conversation)
    assert done.status == JobStatus.FAILED and "could not be posted after 8 tries" in (done.error or "")
    told = telegram.wait_for(lambda c: c.method == "sendMessage" and c.params["chat_id"] == chat)
    assert "could not be posted" in told.params["text"] and told.reply_to == 21
    photos = telegram.find(lambda c: c.method == "sendPhoto" and c.params["chat_id"] == chat)
    assert [c.status for c in photos] == [429] * 8
    took = (done.delivered_at or 0) - (done.finished_at or 0)
    print(f"\nFIGURES give-up: 8 refused sends, job failed and told after {took:.1f} s")


@pytest.fixture
def capped(redis_server: EmbeddedRedis, data_dir: Path) -> Settings:
    """Database 7, emptied, with a queue cap of 10 jobs."""
    return make_settings(
        emptied_database(redis_server, 7), data_dir, max_queue_depth=10, rate_limit_jobs=1000
    )


def test_the_queue_cap_holds_under_concurrent_submits(capped: Settings) -> None:
    clients = [QueueClient(capped) for _ in range(16)]
    start = threading.Barrier(len(clients))
    accepted: list[str] = []
    refused: list[str] = []

    def submit(client: QueueClient, n: int) -> None:
        start.wait()
        for _ in range(4):
            request = JobRequest(
                prompt="a red circle",
                engines=["dfgan"],
                user=f"web:cap{n}",
                conversation=Conversation(platform="web", chat_id=f"cap-{n}"),
            )
            try:
                accepted.append(client.submit(request).id)
            except InputError as exc:
                refused.append(exc.code)

    threads = [threading.Thread(target=submit, args=(c, n)) for n, c in enumerate(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    depth = clients[0].redis.zcard(PENDING_KEY)
    print(f"\nFIGURES cap: 64 concurrent submits, cap 10: {len(accepted)} accepted, {depth} pending")
    assert len(accepted) == 10 and depth == 10
    assert refused == ["queue_full"] * 54


@pytest.mark.parametrize(("left_as", "photos_after"), [("sending", 1), ("sent", 0)])
def test_a_telegram_send_cut_by_a_dead_worker_is_repeated_only_if_its_request_never_fully_left(
    worker: QueueClient, telegram: FakeTelegram, left_as: str, photos_after: int
) -> None:
    chat = 70_010 + photos_after
    conversation = Conversation(platform="telegram", chat_id=str(chat), reply_to="31", status_message_id="32")
    record = finished_job(worker, conversation)
    # The journal a delivery worker leaves when SIGKILLed mid-send: "sending" while the upload was
    # still being written (Telegram cannot have it), "sent" once its last byte had left.
    worker.redis.hset(journal_key(record.id), mapping={"state": left_as, "attempts": 1})
    deliver(worker, record)
    delivered(worker, record.id)
    photos = telegram.find(lambda c: c.method == "sendPhoto" and c.params["chat_id"] == chat)
    notes = telegram.find(
        lambda c: (
            c.method == "editMessageText" and c.params["chat_id"] == chat and c.params["message_id"] == 32
        )
    )
    assert len(photos) == photos_after
    assert len(notes) == 1 - photos_after  # unconfirmed: the status message says so, with Reroll


@pytest.mark.parametrize(("left_as", "posts_after"), [("sending", 1), ("sent", 0)])
def test_a_discord_follow_up_cut_by_a_dead_worker_is_repeated_only_if_its_request_never_fully_left(
    worker: QueueClient, discord: FakeDiscord, left_as: str, posts_after: int
) -> None:
    token = f"itok-cut-{left_as}-" + uuid.uuid4().hex[:6]
    conversation = Conversation(
        platform="discord", chat_id="880003", interaction_token=token, application_id=APP_ID
    )
    record = finished_job(worker, conversation)
    worker.redis.hset(journal_key(record.id), mapping={"state": left_as, "attempts": 1})
    deliver(worker, record)
    delivered(worker, record.id)
    assert len(discord.posted(lambda c: c.path == f"/webhooks/{APP_ID}/{token}")) == posts_after
    notes = discord.calls_to("PATCH", f"/webhooks/{APP_ID}/{token}/messages/@original")
    assert len(notes) == 1 - posts_after
