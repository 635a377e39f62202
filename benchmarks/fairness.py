"""Fairness benchmark: who gets the GPU when one user floods the queue, with real Redis and a real worker.

Run by hand (numbers go to ``docs/benchmarks.md`` and ``docs/scheduling.md``)::

    .venv/bin/python benchmarks/fairness.py [--heavy 50] [--light 5] [--backlog 30]

It starts its own embedded Redis and one real worker process (``python -m worker.cli worker``, CPU,
one torch thread, DF-GAN only), submits through :class:`core.job_client.QueueClient` exactly as the
front-ends do, and reads the order in which jobs were drawn from the job records' own ``started_at``
and ``batch_id`` (jobs drawn in one batch: none of them is "before" another).

Scenarios:

1. **Heavy and light**: one user submits ``--heavy`` jobs, then ``--light`` users one job each. For
   each light user: jobs drawn before theirs. First come, first served would draw all the heavy
   user's jobs first (the FIFO column is that count, from the submit order); the goal is at most the
   number of active users.
2. **Backlogged users**: four users each submit ``--backlog`` jobs, one user after the other. Over a
   window of the first half of all jobs drawn: Jain's fairness index of the GPU time each got
   (1.0 = equal; goal >= 0.95), beside the index FIFO would give.
3. **Two lanes**: an admin (fast lane) and three users (relax lane) backlogged together; the share
   of GPU time each lane got in the window, beside the configured ``fast_share``, and Jain's index
   among the relax users.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(REPO))

from core.child_processes import stop_process  # noqa: E402
from core.embedded_redis import EmbeddedRedis  # noqa: E402
from core.job_client import QueueClient  # noqa: E402
from core.jobs import Conversation, JobRecord, JobRequest  # noqa: E402
from core.settings import Settings  # noqa: E402

ADMIN = "web:admin0000000001"


def jain(values: list[float]) -> float:
    """Jain's fairness index of ``values``: 1.0 when all equal, 1/n when one has everything."""
    total = sum(values)
    squares = sum(v * v for v in values)
    return 1.0 if squares == 0 else total * total / (len(values) * squares)


@contextmanager
def system(steps: int) -> Iterator[tuple[Settings, QueueClient]]:
    """Embedded Redis and one DF-GAN worker process; all stopped and removed on the way out."""
    tmp = Path(tempfile.mkdtemp(prefix="imaginebot-fair-"))
    server = EmbeddedRedis(tmp / "redis", persist=False)
    proc: subprocess.Popen[bytes] | None = None
    try:
        server.start()
        settings = Settings(  # type: ignore[call-arg]
            _env_file=None, redis_url=server.url, data_dir=tmp / "data", device="cpu", torch_threads=1,
            rate_limit_jobs=10_000, max_queue_depth=10_000, default_steps=steps, admin_ids=ADMIN,
        )  # fmt: skip
        env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
        env.update(
            {f"IMAGINEBOT_{k.upper()}": str(v) for k, v in settings.model_dump().items() if v is not None}
        )
        argv = [
            sys.executable,
            "-m",
            "worker.cli",
            "worker",
            "--queues",
            "gpu,delivery",
            "--loglevel",
            "WARNING",
        ]
        with (tmp / "worker.log").open("wb") as log:
            proc = subprocess.Popen(argv, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
        client = QueueClient(settings)
        warm_up(client, proc)
        yield settings, client
    finally:
        if proc is not None:
            stop_process(proc)
        server.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def request(user: str, i: int) -> JobRequest:
    """A DF-GAN job for web user ``user``."""
    chat = user.split(":", 1)[1]
    return JobRequest(
        prompt=f"a red circle number {i}", engines=["dfgan"], seed=i, user=user,
        conversation=Conversation(platform="web", chat_id=chat),
    )  # fmt: skip


def warm_up(client: QueueClient, proc: subprocess.Popen[bytes]) -> None:
    """One job through, so the worker has loaded DF-GAN before anything is measured."""
    record = client.submit(request("web:warmup000000001", 0))
    deadline = time.monotonic() + 300
    while not client.jobs.get(record.id).status.finished:
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError("the worker did not come up")
        time.sleep(0.2)


def drawn(client: QueueClient, ids: list[str], timeout_s: float = 900) -> list[JobRecord]:
    """Wait until every job is finished; the records in the order they were drawn."""
    deadline = time.monotonic() + timeout_s
    while True:
        records = [client.jobs.get(job_id) for job_id in ids]
        if all(r.status.finished for r in records):
            return sorted(records, key=lambda r: (r.started_at or 0.0, r.created_at))
        if time.monotonic() > deadline:
            raise TimeoutError("jobs not finished in time")
        time.sleep(0.2)


def gpu_seconds(records: list[JobRecord]) -> dict[str, float]:
    """Each user's GPU time: a batch's time shared equally by the jobs in it."""
    batches: dict[str, list[JobRecord]] = {}
    for r in records:
        batches.setdefault(r.batch_id or r.id, []).append(r)
    used: Counter[str] = Counter()
    for batch in batches.values():
        started = min(r.started_at or 0.0 for r in batch)
        seconds = max((r.finished_at or started) for r in batch) - started
        for r in batch:
            used[r.request.user] += seconds / len(batch)
    return dict(used)


def batch_starts(records: list[JobRecord]) -> dict[str, float]:
    """When each batch started (its first job's claim)."""
    starts: dict[str, float] = {}
    for r in records:
        key = r.batch_id or r.id
        starts[key] = min(starts.get(key, float("inf")), r.started_at or 0.0)
    return starts


def heavy_and_light(client: QueueClient, heavy: int, light: int) -> None:
    """Scenario 1: for each light user, the jobs drawn between their submit and their own batch
    (jobs that started before they asked cannot be blamed on the scheduler), fair vs FIFO."""
    ids = [client.submit(request("web:heavy00000000001", i)).id for i in range(heavy)]
    lights = [client.submit(request(f"web:light{n:011d}", n)).id for n in range(light)]
    order = drawn(client, ids + lights)
    starts = batch_starts(order)
    by_id = {r.id: r for r in order}
    print(f"\n1. one user submits {heavy} jobs, then {light} users one each (1 worker, batches of up to 8)")
    print("   light user   drawn after they asked, before theirs   FIFO: waiting ahead of theirs")
    waits = []
    for n, job_id in enumerate(lights):
        mine = by_id[job_id]
        asked, own_start = mine.created_at, starts[mine.batch_id or mine.id]
        before = sum(1 for r in order if asked <= starts[r.batch_id or r.id] < own_start)
        fifo = sum(1 for r in order if r.created_at < asked and starts[r.batch_id or r.id] >= asked)
        waits.append(before)
        print(f"   light{n}       {before:>5}                                 {fifo:>5}")
    active = 1 + light
    met = "met" if max(waits) <= active else "NOT met"
    print(f"   worst: {max(waits)} (goal <= {active} active users): {met}")


def backlogged(client: QueueClient, users: list[str], per_user: int) -> tuple[list[JobRecord], float]:
    """Each of ``users`` submits ``per_user`` jobs, one user after the other; the drawn order and the
    moment the last submit returned (from then on every user is backlogged)."""
    ids = [client.submit(request(user, i)).id for user in users for i in range(per_user)]
    since = time.time()
    return drawn(client, ids), since


def window(order: list[JobRecord], since: float, limit: int) -> list[JobRecord]:
    """Jobs drawn while every user was backlogged: batches that started after ``since`` (all jobs
    submitted) and before the batch of the first user's last job; at most ``limit`` of them."""
    starts = batch_starts(order)
    last: dict[str, float] = {}
    for r in order:
        last[r.request.user] = max(last.get(r.request.user, 0.0), starts[r.batch_id or r.id])
    until = min(last.values())
    return [r for r in order if since <= starts[r.batch_id or r.id] < until][:limit]


def fifo_jain(users: list[str], per_user: int, size: int) -> float:
    """The index first come, first served gives over a window of ``size`` jobs (equal job costs)."""
    counts = [min(per_user, max(0, size - k * per_user)) for k in range(len(users))]
    return jain([float(c) for c in counts])


def backlogged_users(client: QueueClient, per_user: int) -> None:
    """Scenario 2: four users backlogged; Jain's index over a window in which none runs out."""
    users = [f"web:back{k:012d}" for k in range(4)]
    order, since = backlogged(client, users, per_user)
    seen = window(order, since, 4 * per_user)
    used = gpu_seconds(seen)
    counts = Counter(r.request.user for r in seen)
    index = jain([used.get(user, 0.0) for user in users])
    print(
        f"\n2. four users each submit {per_user} jobs, one after the other; {len(seen)} drawn while all wait"
    )
    print(f"   jobs each: {[counts.get(u, 0) for u in users]}, "
          f"Jain's index of jobs {jain([float(counts.get(u, 0)) for u in users]):.3f}")  # fmt: skip
    met = "met" if index >= 0.95 else "NOT met"
    fifo = fifo_jain(users, per_user, len(seen))
    print(f"   Jain's index of GPU time {index:.3f} (FIFO: {fifo:.3f}; goal >= 0.95): {met}")


def two_lanes(client: QueueClient, settings: Settings, per_user: int) -> None:
    """Scenario 3: an admin (fast lane) and three users (relax lane), all backlogged."""
    relax = [f"web:relax{k:011d}" for k in range(3)]
    order, since = backlogged(client, [ADMIN, *relax], per_user)
    seen = window(order, since, 4 * per_user)
    used = gpu_seconds(seen)
    fast = used.get(ADMIN, 0.0) / max(1e-9, sum(used.values()))
    fast_jobs = sum(r.request.user == ADMIN for r in seen) / max(1, len(seen))
    print(f"\n3. an admin (fast lane) and three users (relax lane), {per_user} jobs each; "
          f"{len(seen)} drawn while all wait")  # fmt: skip
    print(f"   fast lane's share: {fast_jobs:.2f} of the jobs, {fast:.2f} of GPU time "
          f"(configured {settings.fast_share}; a lane is served a batch of up to 8 at a time)")  # fmt: skip
    print(f"   Jain's index among the relax users: {jain([used.get(u, 0.0) for u in relax]):.3f}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--heavy", type=int, default=50)
    parser.add_argument("--light", type=int, default=5)
    parser.add_argument("--backlog", type=int, default=150, help="jobs per user in scenarios 2 and 3")
    parser.add_argument("--steps", type=int, default=4)
    args = parser.parse_args(argv)
    with system(args.steps) as (settings, client):
        print(f"fast_share {settings.fast_share}, 1 CPU worker (DF-GAN, one torch thread)")
        heavy_and_light(client, args.heavy, args.light)
        backlogged_users(client, args.backlog)
        two_lanes(client, settings, args.backlog)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
