"""Child processes of an ``imaginebot`` command: start ``imaginebot <command>`` with this interpreter,
make it die with us, stop it in order.

Torch-free and free of the other packages: ``imaginebot up`` (the worker's supervisor) and
``imaginebot imagine`` (the command line as a chat front-end, which starts its own worker when no
Redis is configured) both start children this way.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal
import subprocess
import sys
from collections.abc import Callable

from core.settings import Settings

#: The module that ``python -m`` runs as the ``imaginebot`` command (its console script's home).
ENTRY_MODULE = "worker.cli"
PR_SET_PDEATHSIG = 1


def _load_prctl() -> Callable[..., int] | None:
    """libc's ``prctl`` (loaded once, before any fork: a preexec function must not load libraries)."""
    name = ctypes.util.find_library("c")
    if not name or not hasattr(os, "getppid"):
        return None
    try:
        return ctypes.CDLL(name, use_errno=True).prctl
    except (OSError, AttributeError):  # not Linux
        return None


_PRCTL = _load_prctl()


def die_with_parent(sig: int = signal.SIGKILL) -> Callable[[], None]:
    """A ``preexec_fn`` that makes the child receive ``sig`` when this process (strictly: the thread
    calling ``Popen``) dies. Where ``prctl`` is missing (not Linux) it does nothing."""
    parent = os.getpid()

    def preexec() -> None:
        if _PRCTL is None:
            return
        _PRCTL(PR_SET_PDEATHSIG, int(sig), 0, 0, 0)
        if os.getppid() != parent:  # the parent died before prctl took effect
            os.kill(os.getpid(), sig)

    return preexec


def child_command(*command: str) -> list[str]:
    """The argv that runs ``imaginebot <command>`` with this interpreter."""
    return [sys.executable, "-m", ENTRY_MODULE, *command]


def child_env(settings: Settings, **env_overrides: str) -> dict[str, str]:
    """This process's environment, pointed at ``settings``' Redis and data dir."""
    return dict(
        os.environ,
        IMAGINEBOT_REDIS_URL=str(settings.redis_url),
        IMAGINEBOT_DATA_DIR=str(settings.data_dir),
        **env_overrides,
    )


def start_child(settings: Settings, *command: str, **env_overrides: str) -> subprocess.Popen[bytes]:
    """Start ``imaginebot <command>`` as a child process talking to ``settings.redis_url``.

    It has its own session (a Ctrl-C in the terminal reaches only us, and we stop it) and is killed
    when this process dies, even by SIGKILL, so it can never outlive us.
    """
    return subprocess.Popen(
        child_command(*command),
        env=child_env(settings, **env_overrides),
        start_new_session=True,
        preexec_fn=die_with_parent(),  # noqa: PLW1509 - started from the main thread
    )


def start_worker(settings: Settings, queues: str, quiet: bool = False) -> subprocess.Popen[bytes]:
    """Start ``imaginebot worker`` as a child process talking to ``settings.redis_url``."""
    extra = ["--loglevel", "WARNING"] if quiet else []
    return start_child(settings, "worker", "--queues", queues, *extra)


def stop_process(proc: subprocess.Popen[bytes], timeout_s: float = 30.0) -> None:
    """Ask a child to stop (SIGTERM: Celery's warm shutdown finishes the running task), then kill."""
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)
