"""``imaginebot worker --gpus 0,1|all``: one worker process per GPU.

Each child sees one GPU (``CUDA_VISIBLE_DEVICES``), so an engine's ``cuda`` is that GPU; each has its
own Celery node name (``gpu<N>@<host>``) and, when metrics are on, its own metrics port (base + i).
The parent only supervises: it forwards SIGTERM / SIGINT (Celery's warm shutdown: running jobs
finish), restarts a child that dies on its own after a short backoff, and exits when all have stopped.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence

log = logging.getLogger(__name__)

RESTART_BACKOFF_S = (1.0, 2.0, 5.0, 10.0, 30.0)
POLL_S = 0.2
STABLE_S = 60.0  # a child up this long has its crash count reset


class GpuSpecError(ValueError):
    """``--gpus`` names no GPU, a bad index, or ``all`` on a machine without GPUs."""


def parse_gpus(spec: str, count: Callable[[], int] | None = None) -> list[str]:
    """GPU indices from ``0,1`` or ``all`` (``count`` says how many GPUs there are)."""
    spec = spec.strip().lower()
    if spec == "all":
        found = (count or visible_gpu_count)()
        if found < 1:
            raise GpuSpecError("--gpus all: no GPU found on this machine")
        return [str(i) for i in range(found)]
    ids = [part.strip() for part in spec.split(",") if part.strip()]
    if not ids or not all(i.isdigit() for i in ids):
        raise GpuSpecError(f"--gpus takes 'all' or GPU indices like 0,1 (got {spec!r})")
    if len(set(ids)) != len(ids):
        raise GpuSpecError(f"--gpus names a GPU twice: {spec!r}")
    return ids


def visible_gpu_count() -> int:
    """How many CUDA GPUs this process can see (0 without torch's CUDA)."""
    try:
        import torch

        return int(torch.cuda.device_count())
    except Exception:  # no torch build with CUDA, no driver
        return 0


def node_name(gpu: str, host: str | None = None) -> str:
    """Celery node name of the worker process for ``gpu``."""
    return f"gpu{gpu}@{host or socket.gethostname()}"


def child_env(base: dict[str, str], gpu: str, index: int, metrics_port: int | None) -> dict[str, str]:
    """The environment of the child for ``gpu`` (the ``index``-th one)."""
    env = dict(base, CUDA_VISIBLE_DEVICES=gpu, CUDA_DEVICE_ORDER="PCI_BUS_ID")
    if metrics_port is not None:
        env["IMAGINEBOT_METRICS_PORT"] = str(metrics_port + index)
    return env


def run_per_gpu(gpus: Sequence[str], worker_args: Sequence[str], metrics_port: int | None) -> int:
    """Run ``imaginebot worker <worker_args> --hostname gpuN@host`` once per GPU until told to stop.

    Returns the exit status for the parent: 0 after a requested stop.
    """
    stopping = False

    def start(index: int, gpu: str) -> subprocess.Popen[bytes]:
        command = [sys.executable, "-m", "worker.cli", "worker", *worker_args, "--hostname", node_name(gpu)]
        env = child_env(dict(os.environ), gpu, index, metrics_port)
        # Own session: a terminal's Ctrl-C reaches only the parent, which stops the children in order.
        proc = subprocess.Popen(command, env=env, start_new_session=True)
        log.info("worker for GPU %s started (pid %d, node %s)", gpu, proc.pid, node_name(gpu))
        return proc

    def request_stop(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True
        for proc in children.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)

    children = {gpu: start(i, gpu) for i, gpu in enumerate(gpus)}
    crashes = dict.fromkeys(gpus, 0)
    started_at = dict.fromkeys(gpus, time.monotonic())
    restart_at: dict[str, float] = {}
    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        while True:
            if stopping:
                if all(proc.poll() is not None for proc in children.values()):
                    return 0
            else:
                now = time.monotonic()
                for index, gpu in enumerate(gpus):
                    proc = children[gpu]
                    if proc.poll() is None:
                        continue
                    if gpu not in restart_at:
                        if now - started_at[gpu] > STABLE_S:
                            crashes[gpu] = 0  # it ran fine for a while: this is a new crash streak
                        delay = RESTART_BACKOFF_S[min(crashes[gpu], len(RESTART_BACKOFF_S) - 1)]
                        crashes[gpu] += 1
                        log.warning(
                            "worker for GPU %s exited (%s); restart in %.0f s", gpu, proc.returncode, delay
                        )
                        restart_at[gpu] = now + delay
                    elif now >= restart_at[gpu]:
                        del restart_at[gpu]
                        children[gpu] = start(index, gpu)
                        started_at[gpu] = time.monotonic()
            time.sleep(POLL_S)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
