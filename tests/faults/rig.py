"""A whole deployment on loopback for the fault tests and the soak: a real redis-server with AOF, real
``imaginebot worker`` processes (GPU and delivery), and the fake Telegram and Discord servers with fault
injection; plus what the tests measure: jobs posted once, twice or never, in which conversation.

Jobs are submitted through :class:`core.job_client.QueueClient`, exactly as the bots submit them, with
Telegram (chat, forum topic, reply), Discord (interaction follow-up or channel) and web conversations.
"""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.embedded_redis import EmbeddedRedis
from core.job_client import QueueClient
from core.jobs import Conversation, JobRecord, JobRequest
from core.settings import Settings
from tests.helpers.fake_discord import APP_ID, FakeDiscord
from tests.helpers.fake_telegram import FakeTelegram
from tests.helpers.processes import settings_env

TELEGRAM_TOKEN = "123:RIG"
DISCORD_TOKEN = "rig-bot-token"


def rig_settings(
    redis_url: str, data_dir: Path, telegram: FakeTelegram, discord: FakeDiscord, **overrides: Any
) -> Settings:
    """Settings of every process of the rig: short leases and visibility timeout, so a killed worker's
    jobs come back within seconds; generous limits; then ``overrides``."""
    values: dict[str, Any] = dict(
        redis_url=redis_url,
        data_dir=data_dir,
        device="cpu",
        torch_threads=1,
        default_steps=2,
        rate_limit_jobs=10_000,
        max_queue_depth=10_000,
        job_lease_s=3.0,
        broker_visibility_timeout_s=4,
        telegram_token=TELEGRAM_TOKEN,
        telegram_api_base=telegram.url,
        discord_api_base=discord.api_base,
        discord_token=DISCORD_TOKEN,
    )
    values.update(overrides)
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


@dataclass
class Worker:
    """One ``imaginebot worker`` process of the rig (restarted after each kill)."""

    name: str
    queues: str
    concurrency: int = 1
    proc: subprocess.Popen[bytes] | None = None
    kills: int = 0


@dataclass
class Rig:
    """The running deployment. Start with :meth:`start`, end with :meth:`stop`."""

    workdir: Path
    data_dir: Path
    gpu_workers: int = 2
    delivery_concurrency: int = 4
    telegram: FakeTelegram = field(default_factory=lambda: FakeTelegram(TELEGRAM_TOKEN))
    discord: FakeDiscord = field(default_factory=FakeDiscord)
    redis: EmbeddedRedis | None = None
    settings: Settings | None = None
    workers: list[Worker] = field(default_factory=list)
    jobs: list[JobRecord] = field(default_factory=list)
    log_dir: Path | None = None
    overrides: dict[str, Any] = field(default_factory=dict)

    # --- life --------------------------------------------------------------------------------
    def start(self) -> Rig:
        self.telegram.start()
        self.discord.start()
        self.redis = EmbeddedRedis(self.workdir / "redis", persist=True).start()
        self.settings = rig_settings(
            self.redis.url, self.data_dir, self.telegram, self.discord, **self.overrides
        )
        self.log_dir = self.workdir / "logs"
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.workers = [Worker(f"gpu{i}", "gpu") for i in range(self.gpu_workers)]
        self.workers.append(Worker("delivery", "delivery", concurrency=self.delivery_concurrency))
        for worker in self.workers:
            self.spawn(worker)
        return self

    def stop(self) -> None:
        for worker in self.workers:
            if worker.proc is not None and worker.proc.poll() is None:
                worker.proc.kill()
                worker.proc.wait(timeout=10)
        if self.redis is not None:
            self.redis.stop()
        self.telegram.stop()
        self.discord.stop()

    def spawn(self, worker: Worker) -> None:
        """Start (or restart) ``worker`` as a real process."""
        assert self.settings is not None and self.log_dir is not None
        env = settings_env(self.settings)
        log = open(self.log_dir / f"{worker.name}.log", "ab")  # noqa: SIM115 - the child owns it
        worker.proc = subprocess.Popen(
            [sys.executable, "-m", "worker.cli", "worker", "--queues", worker.queues,
             "--concurrency", str(worker.concurrency), "--loglevel", "WARNING"],
            env=env, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip

    def kill(self, worker: Worker) -> None:
        """SIGKILL ``worker`` (no warm shutdown, no ack) and start a new one in its place."""
        assert worker.proc is not None
        worker.proc.send_signal(signal.SIGKILL)
        worker.proc.wait(timeout=10)
        worker.kills += 1
        self.spawn(worker)

    def kill_redis(self) -> None:
        """SIGKILL redis-server."""
        assert self.redis is not None and self.redis.process is not None
        self.redis.process.kill()
        self.redis.process.wait(timeout=10)

    def restart_redis(self) -> None:
        """Start redis-server again on the same port and directory (its AOF brings the data back)."""
        assert self.redis is not None
        self.redis.start()

    @property
    def queue(self) -> QueueClient:
        assert self.settings is not None
        return QueueClient(self.settings)

    # --- traffic -----------------------------------------------------------------------------
    def conversation(self, platform: str, n: int) -> Conversation:
        """The ``n``-th conversation of ``platform``: 6 Telegram chats (two of them forum topics),
        Discord follow-ups and channel posts, 4 web conversations."""
        if platform == "telegram":
            chat = 60_000 + n % 6
            thread = str(900 + n % 2) if n % 6 in (4, 5) else None
            chat_id = str(-chat if thread else chat)
            return Conversation(
                platform="telegram",
                chat_id=chat_id,
                thread_id=thread,
                reply_to=str(1000 + n),
                status_message_id=str(2000 + n),
            )
        if platform == "discord":
            channel = str(880_000 + n % 4)
            if n % 2:
                return Conversation(platform="discord", chat_id=channel)  # token gone: channel post
            token = f"itok-rig-{n}-{random.randrange(1 << 30)}"
            return Conversation(
                platform="discord", chat_id=channel, interaction_token=token, application_id=APP_ID
            )
        return Conversation(platform="web", chat_id=f"rig-web-{n % 4}")

    def submit(self, platform: str, n: int, client: QueueClient | None = None) -> JobRecord:
        """Queue one DF-GAN job for conversation ``n`` of ``platform``."""
        conversation = self.conversation(platform, n)
        request = JobRequest(
            prompt=f"a red circle number {n}",
            engines=["dfgan"],
            seed=n,
            user=f"{platform}:{n % 20}",
            conversation=conversation,
        )
        record = (client or self.queue).submit(request)
        self.jobs.append(record)
        return record

    # --- what happened -----------------------------------------------------------------------
    def posts(self) -> Counter[str]:
        """How many result messages each job got, across the three platforms."""
        count: Counter[str] = Counter()
        for call in self.telegram.find(lambda c: c.method == "sendPhoto" and c.processed):
            for data in call.callback_data:
                if data.startswith("rr:"):
                    count[data[3:]] += 1
        for call in self.discord.posted():
            for row in (call.json or {}).get("components") or []:
                for button in row.get("components", []):
                    if button.get("custom_id", "").startswith("rr:"):
                        count[button["custom_id"][3:]] += 1
        queue = self.queue
        for n in range(4):
            for event in queue.history.read("web", f"rig-web-{n}"):
                if event.get("role") == "bot" and event.get("job_id"):
                    count[str(event["job_id"])] += 1
        return count

    def misplaced(self) -> list[str]:
        """Jobs whose result went to another chat, topic, reply or interaction than theirs."""
        by_id = {job.id: job.request.conversation for job in self.jobs}
        wrong = []
        for call in self.telegram.find(lambda c: c.method == "sendPhoto" and c.processed):
            job_id = next((d[3:] for d in call.callback_data if d.startswith("rr:")), None)
            conv = by_id.get(job_id or "")
            if conv is None:
                continue
            thread = int(conv.thread_id) if conv.thread_id else None
            if (
                call.params["chat_id"] != int(conv.chat_id)
                or call.params.get("message_thread_id") != thread
                or call.reply_to != int(conv.reply_to or 0)
            ):
                wrong.append(job_id or "?")
        for call in self.discord.posted():
            ids = [
                b["custom_id"][3:]
                for row in (call.json or {}).get("components") or []
                for b in row.get("components", [])
                if b.get("custom_id", "").startswith("rr:")
            ]
            for job_id in ids:
                conv = by_id.get(job_id)
                if conv is None:
                    continue
                if conv.interaction_token:
                    expected = f"/webhooks/{APP_ID}/{conv.interaction_token}"
                else:
                    expected = f"/channels/{conv.chat_id}/messages"
                if call.path != expected:
                    wrong.append(job_id)
        return wrong

    def undelivered(self) -> list[str]:
        """Jobs not yet marked delivered (unreadable ones count)."""
        queue = self.queue
        out = []
        for job in self.jobs:
            try:
                if queue.jobs.get(job.id).delivered_at is None:
                    out.append(job.id)
            except Exception:  # noqa: BLE001 - Redis away or the record lost: not delivered
                out.append(job.id)
        return out

    def wait_delivered(self, timeout_s: float) -> float:
        """Wait until every job is delivered; returns the seconds it took. Fails after ``timeout_s``."""
        began = time.monotonic()
        left: list[str] = []
        while time.monotonic() - began < timeout_s:
            left = self.undelivered()
            if not left:
                return time.monotonic() - began
            time.sleep(0.25)
        raise AssertionError(
            f"{len(left)} jobs not delivered in {timeout_s} s: {left[:5]}; logs in {self.log_dir}"
        )

    def figures(self, name: str, drained_s: float, **extra: Any) -> dict[str, Any]:
        """The figures of a run (also printed, for docs/reliability.md)."""
        posts = self.posts()
        figures: dict[str, Any] = {
            "jobs": len(self.jobs),
            "kills": sum(w.kills for w in self.workers),
            "lost": sum(1 for job in self.jobs if posts[job.id] == 0),
            "duplicates": sum(1 for job in self.jobs if posts[job.id] > 1),
            "misplaced": len(self.misplaced()),
            "drain_s": round(drained_s, 1),
            **extra,
        }
        print(f"\nFIGURES {name}: " + ", ".join(f"{k} {v}" for k, v in figures.items()))
        for job in self.jobs:
            if posts[job.id] != 1:
                print("  not posted once:", self.diagnose(job.id, posts[job.id]))
        return figures

    def diagnose(self, job_id: str, posts: int) -> str:
        """One line on a job that was not posted exactly once: its record and delivery journal."""
        queue = self.queue
        record = queue.jobs.get(job_id)
        journal = {k.decode(): v.decode() for k, v in queue.redis.hgetall(f"ib:delivery:{job_id}").items()}
        conv = record.request.conversation
        return (
            f"{job_id} {conv.platform} chat {conv.chat_id} posts {posts} status {record.status.value} "
            f"attempts {record.attempts} error {record.error!r} journal {journal}"
        )
