"""The fast claim path's shortcuts keep the queue's promises (docs/scheduling.md, "The claim path").

- ``submit`` writes the record, the admission and the user's list in one atomic step: a refused job
  leaves nothing behind, and concurrent submits through the queue client never overshoot the cap;
- a web or CLI job is delivered in the round trip that finishes it, exactly once, and not while
  another delivery holds the job's lease;
- a late wake-up for a job another message already drew rewrites nothing and delivers nothing again.

Real Redis (databases 26 and 27 of the session's server), the real generate task body, real DF-GAN.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest
import redis

import worker.generate as generate
from core.embedded_redis import EmbeddedRedis
from core.errors import InputError
from core.job_client import QueueClient, user_jobs_key
from core.jobs import Conversation, JobStatus
from core.settings import Settings
from core.store import PENDING_KEY, History, job_key
from core.validation import request_from_text
from tests.helpers.databases import emptied_database
from tests.helpers.settings import make_settings
from worker.deliver import OPEN_KEY, journal_of, lock_key
from worker.runtime import Runtime


def web_request(settings: Settings, chat: str, seed: int, user: str | None = None) -> Any:
    """A validated DF-GAN web request in conversation ``chat``."""
    return request_from_text(
        f"a red circle --engine dfgan --seed {seed}",
        settings,
        user or f"web:{chat}",
        Conversation(platform="web", chat_id=chat),
    )


@pytest.fixture
def queue(redis_server: EmbeddedRedis, data_dir: Path) -> QueueClient:
    """A queue client on an emptied database of its own (no worker consumes there)."""
    return QueueClient(make_settings(emptied_database(redis_server, 26), data_dir))


def bot_events(client: QueueClient, chat: str, job_id: str) -> list[dict[str, Any]]:
    """The bot's events about ``job_id`` in web conversation ``chat``."""
    history = History(client.redis, client.settings.result_ttl_s).read("web", chat)
    return [e for e in history if e.get("role") == "bot" and e.get("job_id") == job_id]


def test_a_refused_submit_leaves_no_record_and_no_list_entry(queue: QueueClient) -> None:
    settings = queue.settings.model_copy(update={"rate_limit_jobs": 1})
    client = QueueClient(settings, client=queue.redis, producer=queue.producer)
    kept = client.submit(web_request(settings, "refused", 1))
    assert queue.redis.exists(job_key(kept.id))
    before = set(queue.redis.keys("ib:job:*"))
    with pytest.raises(InputError) as refused:
        client.submit(web_request(settings, "refused", 2))
    assert refused.value.code == "rate_limited"
    assert set(queue.redis.keys("ib:job:*")) == before
    assert queue.redis.lrange(user_jobs_key("web:refused"), 0, -1) == [kept.id.encode()]
    assert queue.redis.zcard(PENDING_KEY) == 1


def test_concurrent_submits_through_the_client_never_overshoot_the_cap(
    redis_server: EmbeddedRedis, data_dir: Path
) -> None:
    url = emptied_database(redis_server, 27)
    settings = make_settings(url, data_dir, max_queue_depth=30)
    admitted: list[str] = []
    refused: list[str] = []

    def submitter(i: int) -> None:
        client = QueueClient(settings)
        for n in range(6):
            try:
                admitted.append(client.submit(web_request(settings, f"cap{i}", n)).id)
            except InputError as exc:
                refused.append(exc.code)

    threads = [threading.Thread(target=submitter, args=(i,)) for i in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    check = redis.Redis.from_url(url)
    assert len(admitted) == 30 and refused == ["queue_full"] * 30
    assert check.zcard(PENDING_KEY) == 30
    assert len(check.keys("ib:job:*")) == 30  # every admitted job has its record, no refused one has
    listed = [job for i in range(10) for job in check.lrange(user_jobs_key(f"web:cap{i}"), 0, -1)]
    assert sorted(j.decode() for j in listed) == sorted(admitted)


def test_a_web_job_is_delivered_with_its_finish_once(queue: QueueClient, celery_app: Any) -> None:
    rt = Runtime(queue.settings, celery_app)
    first = queue.submit(web_request(queue.settings, "inline", 1))
    second = queue.submit(web_request(queue.settings, "inline", 2))
    outcome = generate.run_generate(rt, first.id)  # draws both in one batch
    assert sorted(outcome.ran) == sorted([first.id, second.id])
    assert sorted(outcome.delivered) == sorted(outcome.ran)
    for job in (first, second):
        record = queue.jobs.get(job.id)
        assert record.status == JobStatus.DONE and record.delivered_at is not None
        assert [e["status"] for e in bot_events(queue, "inline", job.id)] == ["done"]
        assert journal_of(rt, job.id)["state"] == "posted"
        assert not queue.redis.sismember(OPEN_KEY, job.id)

    # The second job's own message comes late: its job was drawn with the first.
    raw = queue.redis.get(job_key(second.id))
    late = generate.run_generate(rt, second.id)
    assert late.ran == [] and late.delivered == []
    assert queue.redis.get(job_key(second.id)) == raw  # not rewritten
    assert len(bot_events(queue, "inline", second.id)) == 1  # not told twice


def test_a_held_delivery_lease_leaves_the_job_to_the_careful_path(
    queue: QueueClient, celery_app: Any
) -> None:
    rt = Runtime(queue.settings, celery_app)
    job = queue.submit(web_request(queue.settings, "leased", 3))
    queue.redis.set(lock_key(job.id), "someone-else", px=60_000)  # another delivery is under way
    outcome = generate.run_generate(rt, job.id)
    assert outcome.ran == [job.id] and outcome.delivered == []
    record = queue.jobs.get(job.id)
    assert record.status == JobStatus.DONE and record.delivered_at is None
    assert bot_events(queue, "leased", job.id) == []
    assert journal_of(rt, job.id) == {}


def test_the_take_reads_the_keys_a_worker_checks_in_the_same_round_trip(queue: QueueClient) -> None:
    job = queue.submit(web_request(queue.settings, "also", 4))
    queue.redis.set("ib:models:dfgan:promoted", "v7")
    taken = queue.fair.take(
        8, own=job.id, also_read=("ib:models:dfgan:promoted", "ib:models:diffusion:promoted")
    )
    assert taken.claimed == [job.id]
    assert taken.also == {"ib:models:dfgan:promoted": b"v7", "ib:models:diffusion:promoted": None}
    assert queue.fair.take(8, own=job.id).also == {}
