"""Scale-out benchmark: throughput with 1 and with 2 CPU worker processes on one Redis.

Run by hand (figures go to ``docs/scaling.md``)::

    .venv/bin/python benchmarks/scale_out.py [--engines dfgan,diffusion] [--dfgan-jobs 160]
        [--diffusion-jobs 24] [--steps 20] [--rounds 1]

For each engine and each worker count it starts a fresh embedded Redis (not persisted) and that many
real worker processes (``python -m worker.cli worker --queues gpu,delivery``, CPU, one torch thread
each, distinct node names), waits until every worker answers a Celery ping and has drawn a warm-up
job, then submits a burst of jobs (web conversations, distinct seeds) and waits until all are
delivered. Throughput is images / (last ``delivered_at`` - first ``created_at``), from the job
records' own timestamps. Redis commands per job come from ``INFO commandstats`` deltas over the
burst, minus the benchmark's own polling commands (counted).

It also prints which worker drew how many jobs, and the load average, because on a shared machine
the second worker only helps as far as a core is free for it.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(REPO))

import redis  # noqa: E402

from core.embedded_redis import EmbeddedRedis  # noqa: E402
from core.job_client import QueueClient  # noqa: E402
from core.jobs import Conversation, JobRequest  # noqa: E402
from core.settings import Settings  # noqa: E402
from core.store import JobStore  # noqa: E402
from core.task_contract import make_producer  # noqa: E402

PROMPTS = ("a red circle", "a blue square", "a green triangle on the left", "a small yellow star")


@dataclass
class Burst:
    """One measured burst."""

    engine: str
    workers: int
    jobs: int
    images: int
    seconds: float
    commands_per_job: float
    per_worker: dict[str, int]
    load: str

    @property
    def images_per_s(self) -> float:
        """Throughput of the burst."""
        return self.images / self.seconds


def load_average() -> str:
    """The 1-minute load average, for the record."""
    try:
        return f"{os.getloadavg()[0]:.2f}"
    except OSError:
        return "?"


def command_total(client: redis.Redis) -> int:
    """Commands the server has run since it started (``INFO commandstats``)."""
    return sum(int(v["calls"]) for v in client.info("commandstats").values())


def settings_for(url: str, data_dir: Path, steps: int) -> Settings:
    """Settings of the benchmark's workers and client."""
    return Settings(  # type: ignore[call-arg]
        _env_file=None,
        redis_url=url,
        data_dir=data_dir,
        device="cpu",
        torch_threads=1,
        default_steps=steps,
        rate_limit_jobs=100_000,
        max_queue_depth=100_000,
    )


def start_workers(settings: Settings, count: int, logs: Path) -> list[subprocess.Popen[bytes]]:
    """``count`` worker processes with distinct node names."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("IMAGINEBOT_")}
    for name, value in settings.model_dump().items():
        if value is not None:
            env[f"IMAGINEBOT_{name.upper()}"] = str(value)
    env["HF_HUB_OFFLINE"] = "1"
    procs = []
    for i in range(count):
        argv = [sys.executable, "-m", "worker.cli", "worker", "--queues", "gpu,delivery",
                "--loglevel", "WARNING", "--hostname", f"bench{i}@%h"]  # fmt: skip
        procs.append(subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL,
                                      stderr=(logs / f"worker{i}.log").open("wb"), cwd=REPO))  # fmt: skip
    return procs


def request(engine: str, i: int, chat: str) -> JobRequest:
    """Job ``i`` of a burst: its own seed, one of a few prompts."""
    return JobRequest(
        prompt=PROMPTS[i % len(PROMPTS)],
        engines=[engine],
        seed=i,
        user=f"web:{chat}",
        conversation=Conversation(platform="web", chat_id=chat),
    )


def wait_delivered(store: JobStore, ids: list[str], timeout_s: float) -> tuple[list, int]:
    """Records once all are delivered, and how many Redis commands the polling cost."""
    deadline = time.monotonic() + timeout_s
    polls = 0
    remaining = list(ids)
    while remaining:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{len(remaining)} jobs still not delivered")
        remaining = [i for i in remaining if store.get(i).delivered_at is None]
        polls += len(remaining) + 1
        time.sleep(0.1)
    return [store.get(i) for i in ids], polls


def measure(engine: str, workers: int, jobs: int, steps: int, data_dir: Path) -> Burst:
    """One burst of ``jobs`` ``engine`` jobs against ``workers`` fresh worker processes."""
    work = Path(tempfile.mkdtemp(prefix="imaginebot-scale-"))
    with EmbeddedRedis(work / "redis", persist=False) as server:
        settings = settings_for(server.url, data_dir, steps)
        procs = start_workers(settings, workers, work)
        try:
            producer = make_producer(server.url)
            deadline = time.monotonic() + 600
            while len({n for r in producer.control.ping(timeout=1.0) for n in r}) < workers:
                if time.monotonic() > deadline:
                    raise TimeoutError("workers did not come up")
            producer.close()
            client = QueueClient(settings)
            store = client.jobs
            # Warm-up: one job per worker, so model loading and first-call costs stay out.
            warm = [client.submit(request(engine, 10_000 + i, "warmup")).id for i in range(workers * 2)]
            wait_delivered(store, warm, 600)
            raw = redis.Redis.from_url(server.url)
            before = command_total(raw)
            ids = [client.submit(request(engine, i, f"bench{i % 8}")).id for i in range(jobs)]
            records, polls = wait_delivered(store, ids, 3600)
            commands = command_total(raw) - before - polls - 1
            first = min(r.created_at for r in records)
            last = max(float(r.delivered_at) for r in records)
            per_worker: dict[str, int] = {}
            for r in records:
                per_worker[str(r.worker)] = per_worker.get(str(r.worker), 0) + 1
            return Burst(engine, workers, jobs, sum(r.request.count for r in records), last - first,
                         commands / jobs, per_worker, load_average())  # fmt: skip
        finally:
            for proc in procs:
                proc.send_signal(signal.SIGTERM)
            for proc in procs:
                try:
                    proc.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    proc.kill()


def main(argv: list[str] | None = None) -> int:
    """Measure and print a table for docs/scaling.md."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--engines", default="dfgan,diffusion")
    parser.add_argument("--dfgan-jobs", type=int, default=160)
    parser.add_argument("--diffusion-jobs", type=int, default=24)
    parser.add_argument("--steps", type=int, default=20, help="diffusion steps per job")
    parser.add_argument("--rounds", type=int, default=1, help="repeat the 1-then-2 pair this often")
    parser.add_argument("--data-dir", type=Path, default=REPO / "data")
    args = parser.parse_args(argv)
    print(f"cores: {os.cpu_count()}, load average at start: {load_average()}")
    results: list[Burst] = []
    for engine in [e.strip() for e in args.engines.split(",") if e.strip()]:
        jobs = args.dfgan_jobs if engine == "dfgan" else args.diffusion_jobs
        for _ in range(args.rounds):
            for workers in (1, 2):
                burst = measure(engine, workers, jobs, args.steps, args.data_dir)
                results.append(burst)
                split = ", ".join(str(n) for n in sorted(burst.per_worker.values(), reverse=True))
                print(f"{engine:9s} workers={workers} jobs={jobs} {burst.images_per_s:7.2f} images/s "
                      f"({burst.seconds:.1f} s) redis cmds/job {burst.commands_per_job:.1f} "
                      f"split [{split}] load {burst.load}", flush=True)  # fmt: skip
    print("\n| engine | workers | images/s | ratio to 1 worker | Redis commands/job | jobs per worker |")
    print("|---|---|---|---|---|---|")
    for burst in results:
        one = [b for b in results if b.engine == burst.engine and b.workers == 1]
        base = sum(b.images_per_s for b in one) / len(one)
        split = " / ".join(str(n) for n in sorted(burst.per_worker.values(), reverse=True))
        print(f"| {burst.engine} | {burst.workers} | {burst.images_per_s:.2f} | "
              f"{burst.images_per_s / base:.2f} | {burst.commands_per_job:.1f} | {split} |")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
