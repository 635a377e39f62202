"""Real worker processes for tests: start one, stop one."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping

from core import child_processes
from core.settings import Settings


def settings_env(settings: Settings, base: Mapping[str, str] | None = None, **extra: str) -> dict[str, str]:
    """``base`` (this process's environment by default) with every set field of ``settings`` as its
    ``IMAGINEBOT_*`` variable, then ``extra``: a child process then reads exactly ``settings``."""
    env = dict(os.environ if base is None else base)
    for name, value in settings.model_dump().items():
        if value is not None:
            env[f"IMAGINEBOT_{name.upper()}"] = str(value)
    env.update(extra)
    return env


def worker_subprocess(
    settings: Settings, queues: str = "gpu,delivery", *args: str, **env: str
) -> subprocess.Popen[bytes]:
    """Start ``imaginebot worker`` as a real separate process with exactly ``settings`` (via env),
    with more command-line ``args`` (e.g. ``--gpus 0,1``) and environment ``env`` when given."""
    return subprocess.Popen(
        [sys.executable, "-m", "worker.cli", "worker", "--queues", queues, "--loglevel", "WARNING", *args],
        env=settings_env(settings, **env),
    )


def stop_process(proc: subprocess.Popen[bytes]) -> None:
    """Warm shutdown, bounded: SIGTERM, up to a minute for a running job to finish, then SIGKILL;
    a process that has already exited is left as it is."""
    child_processes.stop_process(proc, timeout_s=60.0)
