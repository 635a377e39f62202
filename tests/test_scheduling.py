"""The fair scheduler end to end: real Redis, real worker processes, jobs submitted as the front-ends do.

Ordering is read from the job records (which batch drew a job: ``started_at``), never from timings.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from core.embedded_redis import EmbeddedRedis
from core.errors import InputError
from core.fair_queue import FairQueue, batch_key_of
from core.job_client import QueueClient
from core.jobs import Conversation, JobRecord, JobRequest, JobStatus
from core.settings import Settings
from tests.helpers.databases import emptied_database
from tests.helpers.processes import stop_process, worker_subprocess
from tests.helpers.settings import make_settings
from tests.helpers.waiting import eventually


@pytest.fixture
def isolated(redis_server: EmbeddedRedis, data_dir: Path) -> Settings:
    """Database 1 of the session Redis, emptied (no worker there until a test starts one), DF-GAN only."""
    url = emptied_database(redis_server, 1)
    return make_settings(url, data_dir, engines="dfgan", job_lease_s=3.0, admin_ids="web:admin")


def job(user: str, i: int, steps: int = 4) -> JobRequest:
    """A DF-GAN job of web user ``user``."""
    chat = user.split(":", 1)[1]
    return JobRequest(
        prompt=f"a red circle {i}", engines=["dfgan"], seed=i, steps=steps, size=64, user=user,
        conversation=Conversation(platform="web", chat_id=chat),
    )  # fmt: skip


def drawn(client: QueueClient, ids: list[str]) -> list[JobRecord]:
    """Every job delivered (bounded wait); their records."""
    eventually(
        lambda: all(client.jobs.get(i).delivered_at is not None for i in ids),
        timeout_s=180,
        what="all delivered",
    )
    return [client.jobs.get(i) for i in ids]


def batches(records: list[JobRecord]) -> list[str]:
    """The batches the jobs were drawn in, in the order they were drawn (by their first start)."""
    first: dict[str, float] = {}
    for r in records:
        assert r.batch_id is not None
        first[r.batch_id] = min(first.get(r.batch_id, float("inf")), r.started_at or 0.0)
    return sorted(first, key=first.__getitem__)


def test_light_users_are_drawn_in_the_first_batch_not_after_a_heavy_backlog(isolated: Settings) -> None:
    """FIFO: 12 heavy jobs fill the first batch of 8 and the light users wait for the second. Fair
    share: the light users' jobs are in the first batch the worker draws."""
    client = QueueClient(isolated)
    heavy = [client.submit(job("web:heavy", i)).id for i in range(12)]
    light = [client.submit(job(f"web:light{n}", 100 + n)).id for n in range(3)]
    proc = worker_subprocess(isolated)
    try:
        records = {r.id: r for r in drawn(client, heavy + light)}
    finally:
        stop_process(proc)
    assert all(r.status == JobStatus.DONE for r in records.values())
    first = batches(list(records.values()))[0]
    assert [records[i].batch_id for i in light] == [first] * 3
    assert records[heavy[0]].batch_id == first  # the heavy user's first job was not pushed back either
    assert sum(records[i].batch_id == first for i in heavy) == 5  # 8 per batch: 1 + 4 heavy, 3 light


def test_the_fast_lane_goes_first_and_the_relax_lane_still_gets_its_turn(isolated: Settings) -> None:
    """An admin's jobs (fast lane) submitted after a user's backlog are drawn first; the relax lane
    is not starved: it gets a batch before the fast lane's backlog is through."""
    client = QueueClient(isolated)
    relax = [client.submit(job("web:someone", i, steps=4)).id for i in range(3)]
    fast = [client.submit(job("web:admin", 10 + i, steps=5)).id for i in range(3)]  # another batch key
    fast += [client.submit(job("web:admin", 20 + i, steps=6)).id for i in range(3)]
    proc = worker_subprocess(isolated)
    try:
        records = {r.id: r for r in drawn(client, relax + fast)}
    finally:
        stop_process(proc)
    order = batches(list(records.values()))
    assert len(order) == 3
    assert {records[i].batch_id for i in fast[:3]} == {order[0]}
    assert {records[i].batch_id for i in relax} == {order[1]}  # before the admin's second batch
    assert {records[i].batch_id for i in fast[3:]} == {order[2]}


def test_a_job_a_dead_worker_took_from_the_queue_is_put_back_and_drawn(isolated: Settings) -> None:
    client = QueueClient(isolated)
    lost = client.submit(job("web:unlucky", 1)).id
    assert FairQueue(client.redis).claim() == [lost]  # a worker takes it... and dies before claiming it
    later = client.submit(job("web:other", 2)).id
    proc = worker_subprocess(isolated)
    try:
        records = drawn(client, [lost, later])
    finally:
        stop_process(proc)
    assert [r.status for r in records] == [JobStatus.DONE, JobStatus.DONE]
    assert [r.attempts for r in records] == [1, 1]


def test_share_of_the_queue_cancel_and_position_through_the_queue_client(
    redis_server: EmbeddedRedis, data_dir: Path
) -> None:
    """No worker: one user may hold 3 of the 10 places; a cancel gives a place back; positions follow
    the fair order and say how many wait."""
    url = emptied_database(redis_server, 2)
    settings = make_settings(url, data_dir, max_queue_depth=10, user_queue_share=0.3, engines="dfgan")
    client = QueueClient(settings)
    mine = [client.submit(job("web:greedy", i)) for i in range(3)]
    with pytest.raises(InputError) as refused:
        client.submit(job("web:greedy", 3))
    assert refused.value.code == "user_queue_full" and "3 pictures waiting" in refused.value.message
    other = client.submit(job("web:modest", 9))
    assert client.position(other.id) == 2  # behind the greedy user's first job only, not all three
    placed = client.placement(mine[2].id)
    assert placed is not None and (int(placed), placed.waiting, placed.eta_s) == (4, 4, None)  # no worker
    client.cancel(mine[0].id)
    assert (client.position(other.id), client.position(mine[1].id)) == (1, 2)
    client.submit(job("web:greedy", 4))  # the cancelled job's place is free again
    assert client.redis.zcard("ib:pending") == 4


def test_the_queued_answer_says_how_many_wait_and_about_how_long(
    redis_server: EmbeddedRedis, data_dir: Path
) -> None:
    """The estimate comes from the measured seconds per job and the live workers serving ``gpu``."""
    from core.conversation import Caller, ConversationService, Imagine
    from core.heartbeats import WorkerBeat, publish

    url = emptied_database(redis_server, 3)
    settings = make_settings(url, data_dir, engines="dfgan", default_steps=4)
    client = QueueClient(settings)
    service = ConversationService(settings, client)
    chat = Conversation(platform="telegram", chat_id="42")
    me = Caller("telegram", "42", chat, is_admin=False)
    first = service.handle(me, Imagine(prompt="a red circle"))
    assert first.text.startswith("Queued — position 1 of 1\nNo worker is serving dfgan")  # type: ignore[attr-defined]
    client.fair.record_cost(batch_key_of(first.record), 20.0)  # type: ignore[attr-defined]
    for n in (1, 2):
        publish(
            client.redis,
            WorkerBeat(name=f"gpu-box:{n}", pid=n, queues=["gpu"], engines={"dfgan": "v"}, state="ready"),
        )
    second = service.handle(me, Imagine(prompt="a blue square"))
    # ahead of it the first job (2 s: queued before anything was measured), then its own 20 s, on 2 workers
    assert second.text == "Queued — position 2 of 2, about 10 s"  # type: ignore[attr-defined]
    assert client.status(second.record.id)[1].eta_s == pytest.approx((2.0 + 20.0) / 2)  # type: ignore[attr-defined,union-attr]


def test_the_ping_task_is_a_bare_round_trip_that_writes_only_its_own_keys(
    settings: Settings, celery_worker
) -> None:  # noqa: ANN001
    """The benchmark's floor: a no-op task that writes the time it ran, and refuses any other key."""
    import redis as redis_lib

    from core.task_contract import PING_TASK, QUEUE_GPU, make_producer

    client = redis_lib.Redis.from_url(settings.redis_url)
    producer = make_producer(settings.redis_url)
    sent = time.time()
    producer.send_task(PING_TASK, args=["ib:ping:test"], queue=QUEUE_GPU)
    producer.send_task(PING_TASK, args=["ib:job:not-a-ping"], queue=QUEUE_GPU)
    ran = eventually(lambda: client.get("ib:ping:test"), timeout_s=30, what="the ping ran")
    assert float(ran) >= sent
    producer.send_task(PING_TASK, args=["ib:ping:after"], queue=QUEUE_GPU)  # runs after the refused one
    eventually(lambda: client.get("ib:ping:after"), timeout_s=30, what="the second ping ran")
    assert client.get("ib:job:not-a-ping") is None


def test_a_job_for_a_model_no_live_worker_serves_is_answered_at_once(
    redis_server: EmbeddedRedis, data_dir: Path
) -> None:
    """Workers are up but none serves the model: refused at once, naming what is served. A worker that
    serves it announces ``gpu.<model>``: then the job is queued on that route only."""
    from core.heartbeats import WorkerBeat, publish

    url = emptied_database(redis_server, 4)
    client = QueueClient(make_settings(url, data_dir))
    wanted = job("web:someone", 1).model_copy(update={"engines": ["diffusion"], "model": "sdxl"})
    queued = client.submit(wanted)  # no worker up at all: it may be starting, the job waits
    assert client.fair_for("gpu.sdxl").waiting(queued.id) and not client.fair.waiting(queued.id)
    publish(client.redis, WorkerBeat(name="cpu-box:1", pid=1, queues=["gpu"], state="ready"))
    with pytest.raises(InputError) as refused:
        client.submit(wanted)
    assert refused.value.code == "model_not_served"
    assert refused.value.message == (
        "No worker has the model sdxl right now, so nothing could draw it. Only the default model is served."
    )
    publish(client.redis, WorkerBeat(name="gpu-box:1", pid=2, queues=["gpu.sdxl"], state="ready"))
    routed = client.submit(wanted)
    assert client.fair_for("gpu.sdxl").waiting(routed.id)
    assert client.status(routed.id)[1] == 2 and client.placement(routed.id).eta_s is not None  # type: ignore[union-attr]


def test_heterogeneous_workers_each_draw_only_what_they_serve(isolated: Settings) -> None:
    """A CPU box drawing DF-GAN with the default model and a second box serving only another diffusion
    model share one Redis: each job is drawn by the worker that has its model."""
    from training.shipped import SHIPPED_DIFFUSION

    second = f"second={SHIPPED_DIFFUSION}|the shipped model under another name"
    both = isolated.model_copy(update={"engines": "dfgan,diffusion", "diffusion_models": second})
    client = QueueClient(both)
    cpu_box = worker_subprocess(both.model_copy(update={"engines": "dfgan", "worker_models": "default"}))
    gpu_box = worker_subprocess(both.model_copy(update={"worker_models": "second"}))
    try:
        eventually(lambda: len(live_ready(client)) == 2, timeout_s=120, what="both workers ready")
        plain = client.submit(job("web:a", 1))
        on_second = client.submit(
            job("web:b", 2).model_copy(update={"engines": ["diffusion"], "model": "second", "steps": 2})
        )
        records = drawn(client, [plain.id, on_second.id])
    finally:
        stop_process(cpu_box)
        stop_process(gpu_box)
    assert [r.status for r in records] == [JobStatus.DONE, JobStatus.DONE], [r.error for r in records]
    assert records[0].worker == f"{node_of(cpu_box)}" and records[1].worker == f"{node_of(gpu_box)}"


def live_ready(client: QueueClient) -> list[str]:
    """Names of the ready workers announced in this database."""
    from core.heartbeats import live_workers

    return [beat.name for beat in live_workers(client.redis) if beat.state == "ready"]


def node_of(proc: subprocess.Popen[bytes]) -> str:
    """The name a worker process publishes under (host:pid)."""
    from core.heartbeats import worker_name

    return worker_name(proc.pid)
