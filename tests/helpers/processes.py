"""Real worker processes for tests: start one, stop one."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

from core.settings import Settings


def worker_subprocess(
    settings: Settings, queues: str = "gpu,delivery", *args: str, **env: str
) -> subprocess.Popen[bytes]:
    """Start ``imaginebot worker`` as a real separate process with exactly ``settings`` (via env),
    with more command-line ``args`` (e.g. ``--gpus 0,1``) and environment ``env`` when given."""
    full_env = dict(os.environ)
    for name, value in settings.model_dump().items():
        if value is not None:
            full_env[f"IMAGINEBOT_{name.upper()}"] = str(value)
    full_env.update(env)
    return subprocess.Popen(
        [sys.executable, "-m", "worker.cli", "worker", "--queues", queues, "--loglevel", "WARNING", *args],
        env=full_env,
    )


def stop_process(proc: subprocess.Popen[bytes], grace_s: float = 60.0) -> None:
    """Warm shutdown, bounded: SIGTERM, wait up to ``grace_s``, then SIGKILL. A process that has
    already exited is left as it is."""
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)
