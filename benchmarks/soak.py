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


def main() -> None:
    """Parse the options, run the soak, print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=5.0, help="How long to send traffic.")
    parser.add_argument("--rate", type=float, default=1.0, help="Jobs per second.")
    parser.add_argument("--kill-every", type=float, default=5.0, help="Mean seconds between worker kills.")
    parser.add_argument("--redis-kills", action="store_true", help="Also SIGKILL and restart Redis.")
    parser.add_argument(
        "--flaky", action="store_true", help="Platforms answer 30%% 429, 10%% 500, 5%% stall."
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    chance = random.Random(args.seed)

    with tempfile.TemporaryDirectory(prefix="imaginebot-soak-") as tmp:
        rig = Rig(Path(tmp) / "rig", Path(tmp) / "data").start()
        if args.flaky:
            rates = {"rate_429": 0.3, "rate_500": 0.1, "rate_stall": 0.05, "stall_s": 17.0}
            rig.telegram.faults = Faults(methods=("sendPhoto",), seed=args.seed, **rates)
            rig.discord.faults = Faults(methods=("post",), seed=args.seed + 1, **rates)
        stop = threading.Event()
        redis_kills = [0]
        refused = [0]

        def killer() -> None:
            while not stop.wait(chance.expovariate(1 / args.kill_every)):
                if args.redis_kills and chance.random() < 0.1:
                    rig.kill_redis()
                    redis_kills[0] += 1
                    time.sleep(chance.uniform(1, 5))
                    rig.restart_redis()
                else:
                    rig.kill(chance.choice(rig.workers))

        thread = threading.Thread(target=killer, daemon=True)
        thread.start()
        began = time.monotonic()
        n = 0
        try:
            while time.monotonic() - began < args.minutes * 60:
                platform = ("telegram", "discord", "web")[n % 3]
                try:
                    rig.submit(platform, n)
                except (InputError, QueueUnavailable):  # a front-end answers "queue unavailable"
                    refused[0] += 1
                n += 1
                time.sleep(1 / args.rate)
            stop.set()
            thread.join(timeout=60)
            if rig.redis is not None and (rig.redis.process is None or rig.redis.process.poll() is not None):
                rig.restart_redis()
            sent_s = time.monotonic() - began
            rig.wait_delivered(timeout_s=1800)
            rig.figures(
                "soak",
                time.monotonic() - began - sent_s,
                minutes=args.minutes,
                redis_kills=redis_kills[0],
                refused_during_outages=refused[0],
            )
        finally:
            stop.set()
            rig.stop()


if __name__ == "__main__":
    main()
