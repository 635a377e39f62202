"""Real worker processes for tests."""

from __future__ import annotations

import os
import subprocess
import sys

from core.settings import Settings


def worker_subprocess(settings: Settings, queues: str = "gpu,delivery", **env: str):  # noqa: ANN201
    """Start ``imaginebot worker`` as a real separate process with exactly ``settings`` (via env)."""
    full_env = dict(os.environ)
    for name, value in settings.model_dump().items():
        if value is not None:
            full_env[f"IMAGINEBOT_{name.upper()}"] = str(value)
    full_env.update(env)
    return subprocess.Popen(
        [sys.executable, "-m", "worker.cli", "worker", "--queues", queues, "--loglevel", "WARNING"],
        env=full_env,
    )
