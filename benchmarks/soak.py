"""Soak: N minutes of mixed traffic against a whole deployment on loopback, with random kills.

Starts the fault suite's rig (tests/faults/rig.py: a real redis-server with AOF, two GPU workers and a
delivery worker as real ``imaginebot worker`` processes, the fake Telegram and Discord servers with
fault injection), submits DF-GAN jobs to Telegram chats and topics, Discord follow-ups and channels and
web conversations at a steady rate, SIGKILLs a random worker every few seconds (and, with
``--redis-kills``, Redis itself now and then), then lets everything drain and prints the same figures
as the tests: jobs, kills, lost, duplicates, misplaced, time to drain.

Run by hand from the repository root (not part of ``make test``)::

    .venv/bin/python benchmarks/soak.py --minutes 10 --rate 1.0 --redis-kills
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.errors import InputError  # noqa: E402
from core.job_client import QueueUnavailable  # noqa: E402
from tests.faults.rig import Rig  # noqa: E402
from tests.helpers.fake_telegram import Faults  # noqa: E402


def parse_args() -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=5.0, help="How long to send traffic.")
    parser.add_argument("--rate", type=float, default=1.0, help="Jobs per second.")
    parser.add_argument("--kill-every", type=float, default=5.0, help="Mean seconds between worker kills.")
    parser.add_argument("--redis-kills", action="store_true", help="Also SIGKILL and restart Redis.")
    parser.add_argument(
        "--flaky", action="store_true", help="Platforms answer 30%% 429, 10%% 500, 5%% stall."
    )
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args()


def make_flaky(rig: Rig, seed: int) -> None:
    """Both fake platforms answer 30% 429, 10% 500 and stall 5% of the posts."""
    rates = {"rate_429": 0.3, "rate_500": 0.1, "rate_stall": 0.05, "stall_s": 17.0}
    rig.telegram.faults = Faults(methods=("sendPhoto",), seed=seed, **rates)
    rig.discord.faults = Faults(methods=("post",), seed=seed + 1, **rates)


class Killer(threading.Thread):
    """SIGKILLs a random worker every ``kill_every`` seconds on average (exponential gaps) until
    stopped; with ``redis_kills``, one kill in ten is Redis instead, restarted 1-5 s later."""

    def __init__(self, rig: Rig, chance: random.Random, kill_every: float, redis_kills: bool) -> None:
        super().__init__(daemon=True)
        self.rig, self.chance, self.kill_every, self.with_redis = rig, chance, kill_every, redis_kills
        self.stopping = threading.Event()
        self.redis_kills = 0

    def run(self) -> None:
        """Kill until :attr:`stopping` is set."""
        while not self.stopping.wait(self.chance.expovariate(1 / self.kill_every)):
            if self.with_redis and self.chance.random() < 0.1:
                self.rig.kill_redis()
                self.redis_kills += 1
                time.sleep(self.chance.uniform(1, 5))
                self.rig.restart_redis()
            else:
                self.rig.kill(self.chance.choice(self.rig.workers))

    def stop(self) -> None:
        """Stop killing; wait (bounded) for a Redis restart under way to finish."""
        self.stopping.set()
        self.join(timeout=60)


def send_traffic(rig: Rig, minutes: float, rate: float) -> int:
    """Submit jobs round-robin to Telegram, Discord and the web for ``minutes`` at ``rate`` per
    second; how many were refused (a front-end answers "queue unavailable" while Redis is down)."""
    began = time.monotonic()
    refused = n = 0
    while time.monotonic() - began < minutes * 60:
        platform = ("telegram", "discord", "web")[n % 3]
        try:
            rig.submit(platform, n)
        except (InputError, QueueUnavailable):
            refused += 1
        n += 1
        time.sleep(1 / rate)
    return refused


def main() -> None:
    """Parse the options, run the soak, print the figures."""
    args = parse_args()
    chance = random.Random(args.seed)
    with tempfile.TemporaryDirectory(prefix="imaginebot-soak-") as tmp:
        rig = Rig(Path(tmp) / "rig", Path(tmp) / "data").start()
        if args.flaky:
            make_flaky(rig, args.seed)
        killer = Killer(rig, chance, args.kill_every, args.redis_kills)
        killer.start()
        began = time.monotonic()
        try:
            refused = send_traffic(rig, args.minutes, args.rate)
            killer.stop()
            if rig.redis is not None and (rig.redis.process is None or rig.redis.process.poll() is not None):
                rig.restart_redis()
            sent_s = time.monotonic() - began
            rig.wait_delivered(timeout_s=1800)
            rig.figures(
                "soak",
                time.monotonic() - began - sent_s,
                minutes=args.minutes,
                redis_kills=killer.redis_kills,
                refused_during_outages=refused,
            )
        finally:
            killer.stopping.set()
            rig.stop()


if __name__ == "__main__":
    main()
