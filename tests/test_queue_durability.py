"""Jobs are never lost: they wait for a worker, and survive a worker killed mid-job.

These tests use their own Redis database and separate worker processes (``imaginebot worker``),
so the session's in-process worker does not take their jobs.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest

from core.embedded_redis import EmbeddedRedis
from core.job_client import QueueClient
from core.jobs import Conversation, JobRecord, JobStatus
from core.settings import Settings
from core.validation import request_from_text
from tests.helpers.databases import emptied_database
from tests.helpers.jobs import delivered_record
from tests.helpers.processes import stop_process, worker_subprocess
from tests.helpers.settings import make_settings


@pytest.fixture
def isolated(redis_server: EmbeddedRedis, data_dir: Path) -> Settings:
    """Settings on database 5 of the session Redis, emptied first; short lease and visibility timeout."""
    return make_settings(
        emptied_database(redis_server, 5), data_dir, job_lease_s=3.0, broker_visibility_timeout_s=4
    )


def _submit(client: QueueClient, settings: Settings, text: str, user: str = "web:durable") -> JobRecord:
    request = request_from_text(text, settings, user, Conversation(platform="web", chat_id="durable-chat"))
    return client.submit(request)


def test_jobs_wait_without_a_worker_then_run_batched_when_one_starts(isolated: Settings) -> None:
    client = QueueClient(isolated)
    jobs = [_submit(client, isolated, f"a red circle --engine dfgan --seed {i}") for i in range(4)]
    time.sleep(1.0)  # nobody is consuming: everything stays queued, in order
    assert [client.position(j.id) for j in jobs] == [1, 2, 3, 4]
    assert all(client.jobs.get(j.id).status == JobStatus.QUEUED for j in jobs)

    proc = worker_subprocess(isolated)
    try:
        done = [delivered_record(client, j.id, 120) for j in jobs]
    finally:
        stop_process(proc)
    assert all(r.status == JobStatus.DONE for r in done)
    # They waited together, so the worker drew them together.
    assert max(r.batch_size for r in done) > 1
    history = client.history.read("web", "durable-chat")
    assert sorted(e["job_id"] for e in history) == sorted(j.id for j in jobs)  # each delivered once


def test_a_job_survives_its_worker_being_killed_mid_run(isolated: Settings) -> None:
    client = QueueClient(isolated)
    # Long enough (a few seconds on this CPU) to be caught mid-run.
    record = _submit(client, isolated, "a blue square --engine diffusion --size 128 --steps 60 --seed 3")
    first = worker_subprocess(isolated)
    try:
        deadline = time.monotonic() + 120
        while client.jobs.get(record.id).progress is None:
            assert time.monotonic() < deadline, "job never started"
            time.sleep(0.05)
        first.send_signal(signal.SIGKILL)  # no warm shutdown, no ack: the worker just dies
        first.wait(timeout=10)
        assert client.jobs.get(record.id).status == JobStatus.RUNNING
    finally:
        if first.poll() is None:
            first.kill()
    second = worker_subprocess(isolated)
    try:
        done = delivered_record(client, record.id, 240)
    finally:
        stop_process(second)
    assert done.status == JobStatus.DONE
    assert done.attempts == 2
    assert [e["job_id"] for e in client.history.read("web", "durable-chat")] == [record.id]


def test_a_web_delivery_repeated_after_its_event_left_the_kept_history_posts_nothing(
    isolated: Settings,
) -> None:
    from bots.web.send import send
    from core.delivery import DeliveryContext
    from core.store import HISTORY_LIMIT

    client = QueueClient(isolated)
    record = _submit(client, isolated, "a red circle --engine dfgan --seed 1", user="web:told")
    ctx = DeliveryContext(settings=isolated, images=client.images, history=client.history)
    send(record, ctx)
    for i in range(HISTORY_LIMIT):  # the chat goes on: the result's event is trimmed away
        client.history.append("web", "durable-chat", {"role": "user", "text": f"prompt {i}"})
    assert record.id not in [event.get("job_id") for event in client.history.read("web", "durable-chat")]

    send(record, ctx)  # a delivery repeated (its worker died before marking the job delivered)

    events = client.history.read("web", "durable-chat")
    assert record.id not in [event.get("job_id") for event in events]  # not posted a second time
    # A history written before the told-index existed is read instead.
    client.redis.delete(client.history.told_key("web", "durable-chat"))
    assert not client.history.told("web", "durable-chat", record.id)
    client.history.append("web", "durable-chat", {"role": "bot", "job_id": "f" * 16})
    assert client.history.told("web", "durable-chat", "f" * 16)
