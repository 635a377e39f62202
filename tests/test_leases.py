"""The one leased-record machinery (core/leases.py) that jobs and training runs share, on real Redis."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
import redis

from core.embedded_redis import EmbeddedRedis
from core.errors import JobNotFound
from core.jobs import Conversation, JobRecord, JobRequest, JobStatus
from core.leases import Hold, KeyLease, Verdict
from core.store import JobStore
from core.train_runs import RunNotFound, TrainRun, TrainRunStore


@pytest.fixture
def client(redis_server: EmbeddedRedis) -> Iterator[redis.Redis]:
    """Database 13 of the session Redis, emptied first."""
    connection = redis.Redis.from_url(redis_server.url.rsplit("/", 1)[0] + "/13")
    connection.flushdb()
    yield connection
    connection.flushdb()


def _job(store: JobStore) -> JobRecord:
    conversation = Conversation(platform="cli", chat_id="cli")
    record = JobRecord(
        request=JobRequest(prompt="a red circle", user="cli:0", conversation=conversation),
        seed=1,
        steps=4,
        size=64,
    )
    store.save(record)
    return record


def _run(store: TrainRunStore) -> TrainRun:
    run = TrainRun(
        dataset="shapes",
        epochs=1,
        requested_by="cli:0",
        conversation=Conversation(platform="cli", chat_id="c"),
    )
    store.save(run)
    return run


def test_a_claim_takes_a_waiting_record_once_and_a_lapsed_one_again(client: redis.Redis) -> None:
    store = JobStore(client, 60)
    job = _job(store)
    first = store.claim(job.id, "w1", lease_s=30, max_attempts=3)
    assert first.verdict == Verdict.CLAIMED and first.held is not None
    assert (first.held.status, first.held.worker, first.held.attempts) == (JobStatus.RUNNING, "w1", 1)
    second = store.claim(job.id, "w2", lease_s=30, max_attempts=3)
    assert second.verdict == Verdict.HELD_BY_OTHER and second.held is None
    assert 29 < second.recheck_in() <= 31  # when w1's lease can have lapsed

    store.update(job.id, lambda r: setattr(r, "lease_until", time.time() - 1))  # w1 died
    taken = store.claim(job.id, "w2", lease_s=30, max_attempts=3)
    assert taken.verdict == Verdict.CLAIMED and taken.held is not None and taken.held.worker == "w2"
    assert store.claim("0" * 16, "w1", lease_s=30, max_attempts=3).verdict == Verdict.MISSING


def test_a_record_whose_workers_keep_dying_is_given_up(client: redis.Redis) -> None:
    store = JobStore(client, 60)
    job = _job(store)
    for _ in range(2):
        assert store.claim(job.id, "w", lease_s=0.01, max_attempts=2).verdict == Verdict.CLAIMED
        time.sleep(0.02)
    gave_up = store.claim(job.id, "w", lease_s=0.01, max_attempts=2)
    assert gave_up.verdict == Verdict.GAVE_UP and gave_up.record is not None
    assert gave_up.record.status == JobStatus.FAILED and "Gave up after 2 attempts" in (
        gave_up.record.error or ""
    )
    assert store.claim(job.id, "w", lease_s=30, max_attempts=5).verdict == Verdict.ALREADY_DONE


def test_renew_and_finish_yield_to_a_cancel_and_to_a_new_holder(client: redis.Redis) -> None:
    store = TrainRunStore(client, 60)
    run = _run(store)
    assert store.claim(run.id, "w1", lease_s=30, max_attempts=5).verdict == Verdict.CLAIMED
    renewed, hold = store.renew(run.id, 30, owner="w1", step=3)
    assert hold == Hold.RENEWED and renewed.step == 3
    assert store.renew(run.id, 30, owner="w2", step=9)[1] == Hold.LOST
    assert store.get(run.id).step == 3  # the loser wrote nothing
    assert store.finish(run.id, JobStatus.DONE, owner="w2") is None

    store.update(run.id, lambda r: setattr(r, "status", JobStatus.CANCELLED))
    assert store.renew(run.id, 30, owner="w1")[1] == Hold.CANCELLED
    assert store.finish(run.id, JobStatus.DONE, owner="w1", version="v") is None
    assert store.get(run.id).status == JobStatus.CANCELLED and store.get(run.id).version is None


def test_finish_and_give_back(client: redis.Redis) -> None:
    store = TrainRunStore(client, 60)
    run = _run(store)
    store.claim(run.id, "w1", lease_s=30, max_attempts=5)
    back = store.give_back(run.id, "w1", note="waiting")
    assert (back.status, back.attempts, back.note, back.lease_until) == (JobStatus.QUEUED, 0, "waiting", None)
    store.claim(run.id, "w1", lease_s=30, max_attempts=5)
    done = store.finish(run.id, JobStatus.DONE, owner="w1", version="v1")
    assert done is not None and (done.status, done.version, done.lease_until) == (JobStatus.DONE, "v1", None)
    assert store.renew(run.id, 30, owner="w1")[1] == Hold.ENDED


def test_each_store_raises_its_own_not_found(client: redis.Redis) -> None:
    with pytest.raises(JobNotFound):
        JobStore(client, 60).get("0123456789abcdef")
    with pytest.raises(RunNotFound):
        TrainRunStore(client, 60).get("../etc/passwd")  # not a run id: never becomes a key
    with pytest.raises(RunNotFound):
        TrainRunStore(client, 60).update("0123456789abcdef", lambda r: r)


def test_a_key_lease_is_renewed_and_released_only_by_its_holder(client: redis.Redis) -> None:
    mine = KeyLease(client, "ib:test:lock", "run-a", 5)
    theirs = KeyLease(client, "ib:test:lock", "run-b", 5)
    assert mine.acquire() and mine.acquire()  # again with the same token: still ours
    assert not theirs.acquire() and not theirs.renew()
    theirs.release()
    assert mine.holder() == "run-a" and 4 < mine.remaining_s() <= 5
    mine.release()
    assert mine.holder() is None and mine.remaining_s() == 0.0
    assert theirs.acquire() and theirs.holder() == "run-b"
