"""The fault suite with real processes: a real redis-server with AOF, real ``imaginebot worker``
processes SIGKILLed at random (GPU and delivery, the delivery worker also while a send is in flight),
Redis SIGKILLed and restarted, and the fake platforms with fault injection. Each test prints its
figures (jobs, kills, lost, duplicates, time to drain): docs/reliability.md quotes them.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from core.errors import InputError
from core.queue import QueueUnavailable
from tests.fake_telegram import Faults
from tests.faults.rig import Rig

pytestmark = pytest.mark.timeout(600)
DRAIN_S = 300.0


@pytest.fixture
def rig(tmp_path: Path, data_dir: Path) -> Iterator[Rig]:
    running = Rig(tmp_path, data_dir).start()
    yield running
    running.stop()


def test_workers_killed_at_random_lose_nothing_and_post_nothing_twice(rig: Rig) -> None:
    # Some uploads stall past the client's timeout (the fake still posts them): the delivery worker is
    # killed while such a send is in flight, besides random kills of every worker.
    rig.telegram.faults = Faults(methods=("sendPhoto",), rate_stall=0.15, stall_s=17.0, seed=1)
    rig.discord.faults = Faults(methods=("post",), rate_drop=0.1, seed=2)
    chance = random.Random(3)
    for n in range(66):
        rig.submit(("telegram", "discord", "web")[n % 3], n)
    stop = threading.Event()
    mid_send = [0]

    def killer() -> None:
        while not stop.wait(chance.uniform(2.0, 4.0)):
            worker = chance.choice(rig.workers)
            if worker.name == "delivery" and mid_send[0] < 3:
                deadline = time.monotonic() + 10
                while rig.telegram.stalling == 0 and time.monotonic() < deadline and not stop.is_set():
                    time.sleep(0.05)
                if rig.telegram.stalling:
                    mid_send[0] += 1
            rig.kill(worker)

    thread = threading.Thread(target=killer, daemon=True)
    began = time.monotonic()
    thread.start()
    try:
        while rig.undelivered() and time.monotonic() - began < DRAIN_S:
            if sum(w.kills for w in rig.workers) >= 12 and mid_send[0]:
                break  # enough chaos: now let it drain
            time.sleep(0.25)
    finally:
        stop.set()
        thread.join(timeout=30)
    rig.wait_delivered(DRAIN_S)
    drained = time.monotonic() - began
    figures = rig.figures("worker-kills", drained, kills_mid_send=mid_send[0])
    assert figures["kills"] >= 6
    assert figures["lost"] == 0 and figures["duplicates"] == 0 and figures["misplaced"] == 0


def test_redis_killed_and_restarted_with_jobs_queued_and_running(rig: Rig) -> None:
    # Web and Discord channel posts: their delivery is idempotent even for writes Redis lost
    # (appendfsync everysec keeps all but the last second); see docs/reliability.md for Telegram.
    for n in range(40):
        rig.submit("web" if n % 2 else "discord", 2 * n + 1 if n % 2 == 0 else n)
    queue = rig.queue
    began = time.monotonic()
    while len(rig.jobs) - len(rig.undelivered()) < 5 and time.monotonic() - began < 120:
        time.sleep(0.1)
    in_flight = len(rig.undelivered())
    rig.kill_redis()
    answers: list[str] = []
    t0 = time.monotonic()
    with pytest.raises(QueueUnavailable) as refused:
        rig.submit("web", 99, client=queue)
    answers.append(refused.value.message)
    answered_s = time.monotonic() - t0
    time.sleep(2.0)
    rig.restart_redis()
    rig.wait_delivered(DRAIN_S)
    drained = time.monotonic() - began
    figures = rig.figures(
        "redis-restart", drained, in_flight_at_kill=in_flight, outage_answer_s=round(answered_s, 2)
    )
    assert isinstance(refused.value, InputError) and "try again in a minute" in answers[0]
    assert figures["lost"] == 0 and figures["duplicates"] == 0 and figures["misplaced"] == 0


def test_a_flaky_platform_gets_every_result_exactly_once(rig: Rig) -> None:
    rig.telegram.faults = Faults(
        methods=("sendPhoto",), rate_429=0.3, rate_500=0.1, rate_stall=0.05, stall_s=17.0, seed=4
    )
    rig.discord.faults = Faults(
        methods=("post",), rate_429=0.3, rate_500=0.1, rate_stall=0.05, stall_s=17.0, seed=5
    )
    for n in range(30):
        rig.submit("telegram" if n % 2 else "discord", n)
    drained = rig.wait_delivered(DRAIN_S)
    faults = sum(1 for c in rig.telegram.calls if c.fault) + sum(1 for c in rig.discord.calls if c.fault)
    figures = rig.figures("flaky-platform", drained, faults_injected=faults)
    assert figures["lost"] == 0 and figures["duplicates"] == 0 and figures["misplaced"] == 0
