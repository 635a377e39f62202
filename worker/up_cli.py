"""``imaginebot up`` (run everything here, supervised) and ``imaginebot status`` (what runs where)."""

from __future__ import annotations

import contextlib
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from core.child_processes import child_command, child_env
from core.command_line import console, fail, observe, redis_for
from core.settings import Settings
from core.task_contract import ALL_QUEUES

if TYPE_CHECKING:
    import redis

    from core.heartbeats import SupervisorReport, WorkerBeat
    from worker.supervisor import ChildSpec

app = typer.Typer(help="Run everything here, and see what runs.", no_args_is_help=True)

#: Signals that stop ``up``: the first starts an orderly stop, each further one shortens its grace.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
#: How long a stopping child may take before it is killed: a worker finishes the task in hand.
WORKER_GRACE_S = 30.0
BOT_GRACE_S = 10.0
#: Deliveries ``up``'s delivery worker sends at once (threads; each chat still gets one at a time).
DELIVERY_CONCURRENCY = 8
#: Where ``up`` notes its embedded Redis's URL for ``imaginebot status`` (under the data dir).
UP_REDIS_URL_FILE = Path("redis") / "up-url"


def _say(message: str) -> None:
    """A supervisor event in the terminal, with the time (a closed terminal must not stop a stop)."""
    with contextlib.suppress(OSError):
        console.print(f"[dim]{time.strftime('%H:%M:%S')}[/dim] {message}")


def up_children(settings: Settings) -> list[ChildSpec]:
    """What ``up`` runs besides Redis and the web chat: the workers, and the bots with a token."""
    from worker.supervisor import ChildSpec

    ports = iter(
        range(settings.metrics_port + 1, settings.metrics_port + 100) if settings.metrics_port else []
    )

    def env_for(**overrides: str) -> dict[str, str]:
        # With IMAGINEBOT_METRICS_PORT=P, the children serve metrics on P+1, P+2, … (one port each).
        port = next(ports, None)
        return child_env(settings, **overrides, **({"IMAGINEBOT_METRICS_PORT": str(port)} if port else {}))

    # Images, deliveries and training in separate workers: a slow upload must not hold up drawing
    # (deliveries run DELIVERY_CONCURRENCY at once, in order per chat), nor a retrain /imagine. The
    # train worker's visibility timeout outlasts any run (its lease guards against early copies).
    delivery = ("--queues", "delivery", "--concurrency", str(DELIVERY_CONCURRENCY))
    children = [
        ChildSpec("worker gpu", child_command("worker", "--queues", "gpu"), env_for(),
                  group=2, grace_s=WORKER_GRACE_S, heartbeat=True, queues=["gpu"]),
        ChildSpec("worker delivery", child_command("worker", *delivery), env_for(),
                  group=2, grace_s=WORKER_GRACE_S, heartbeat=True, queues=["delivery"]),
        ChildSpec("worker train", child_command("worker", "--queues", "train"),
                  env_for(IMAGINEBOT_BROKER_VISIBILITY_TIMEOUT_S=str(48 * 3600)),
                  group=2, grace_s=WORKER_GRACE_S, heartbeat=True, queues=["train"]),
    ]  # fmt: skip
    for platform, token in (("discord", settings.discord_token), ("telegram", settings.telegram_token)):
        if token:
            children.append(
                ChildSpec(f"{platform} bot", child_command(platform), env_for(), group=1, grace_s=BOT_GRACE_S)
            )
    return children


@app.command()
def up(
    host: str = typer.Option(None, help="Web chat host (default IMAGINEBOT_WEB_HOST)."),
    port: int = typer.Option(None, help="Web chat port (default IMAGINEBOT_WEB_PORT)."),
) -> None:
    """Run everything here: Redis (embedded unless configured), workers (images; training), the web
    chat, and the Discord / Telegram bots when their tokens are set. Children that crash or hang are
    restarted; Ctrl-C (or SIGTERM) stops them all in order, a second one sooner."""
    # The web chat runs in this process, beside the supervisor: its launcher opens it.
    from bots.web.cli import open_web_chat
    from core.store import connect
    from worker.supervisor import Supervisor

    # Handlers first: from here on a signal only asks for a stop, it never interrupts one.
    supervisor = Supervisor([], say=_say)
    for sig in STOP_SIGNALS:
        signal.signal(sig, supervisor.request_stop)
    settings = Settings()
    observe(settings, "up", metrics=False)  # text or JSON logs, redacted; the web chat has /metrics
    embedded = settings.redis_url is None
    # Redis stops last (and dies with us, see redis_for).
    with redis_for(settings, persist=True) as settings:
        url_file = settings.data_dir / UP_REDIS_URL_FILE
        if embedded:
            url_file.write_text(str(settings.redis_url))
        supervisor.redis_client = connect(str(settings.redis_url))
        supervisor.add(*up_children(settings))
        server = open_web_chat(settings, host, port)  # binds now: a busy port fails first
        try:
            if not supervisor.stop_requests:  # a Ctrl-C while Redis started: start nothing more
                supervisor.start()
                for child in supervisor.children:
                    _say(f"started {child.spec.name} (pid {child.pid})")
                server.start()
                console.print(f"[bold green]imaginebot is up:[/bold green] open {server.url} (Ctrl-C stops)")
            supervisor.run()
        finally:
            _say("stopping: web chat, bots, workers (finishing the task in hand), Redis…")
            try:
                server.stop()
            finally:
                supervisor.stop()
                url_file.unlink(missing_ok=True)
    console.print("stopped.")


def _status_redis_url(settings: Settings) -> str | None:
    """The configured Redis, else the embedded one a running ``imaginebot up`` noted in the data dir."""
    if settings.redis_url:
        return settings.redis_url
    noted = settings.data_dir / UP_REDIS_URL_FILE
    return noted.read_text().strip() if noted.is_file() else None


def _ago(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


@dataclass
class StatusSnapshot:
    """What ``imaginebot status`` read from Redis, in one go."""

    depths: dict[str, int]
    workers: list[WorkerBeat]
    oldest: tuple[str, float] | None
    notice: str | None
    reports: list[SupervisorReport]

    @classmethod
    def read(cls, client: redis.Redis, settings: Settings) -> StatusSnapshot:
        """Read it all (raises redis' errors when Redis does not answer)."""
        from core import heartbeats

        client.ping()
        return cls(
            depths={q: heartbeats.queue_depth(client, q) for q in ALL_QUEUES},
            workers=heartbeats.live_workers(client),
            oldest=heartbeats.oldest_waiting(client),
            notice=heartbeats.worker_notice(client, settings.default_engines),
            reports=heartbeats.supervisor_reports(client),
        )


@app.command()
def status() -> None:
    """Is Redis reachable, how deep are the queues, which workers are live (engines and versions),
    which job has waited longest, and what `imaginebot up` gave up on. Exit code 1 when Redis is down
    or no worker serves the default engines."""
    from urllib.parse import urlsplit

    import redis as redis_lib

    from core.store import connect

    settings = Settings()
    url = _status_redis_url(settings)
    if url is None:
        raise fail("No Redis: set IMAGINEBOT_REDIS_URL (or start `imaginebot up` here).")
    parts = urlsplit(url)
    shown = f"{parts.scheme}://{parts.hostname}:{parts.port or 6379}{parts.path}"  # never the password
    try:
        snapshot = StatusSnapshot.read(connect(url), settings)
    except redis_lib.RedisError as exc:
        raise fail(f"Redis at {shown} does not answer: {type(exc).__name__}", 1) from None
    console.print(f"Redis at {shown}: [green]reachable[/green]")
    console.print("queues: " + ", ".join(f"{q} {n} waiting" for q, n in snapshot.depths.items()))
    if snapshot.oldest is None:
        console.print("no job is waiting")
    else:
        job_id, since = snapshot.oldest
        console.print(f"oldest waiting job: {job_id}, for {_ago(time.time() - since)}")
    _print_workers(snapshot.workers)
    _print_reports(snapshot.reports)
    if snapshot.notice:
        console.print(f"[yellow]{snapshot.notice}[/yellow]")
        raise typer.Exit(1)


def _print_workers(workers: list[WorkerBeat]) -> None:
    """A table of the live workers: queues, state, engines and versions, uptime, last heartbeat."""
    from rich.table import Table

    if not workers:
        console.print("[yellow]no live worker[/yellow]")
        return
    table = Table("worker", "queues", "state", "engines (versions)", "up for", "last beat")
    for w in workers:
        engines = ", ".join(f"{name} {version or '(loading)'}" for name, version in w.engines.items())
        table.add_row(
            w.name, ",".join(w.queues), w.state, engines or "-", _ago(time.time() - w.started_at),
            f"{_ago(time.time() - w.beat_at)} ago",
        )  # fmt: skip
    console.print(table)


def _print_reports(reports: list[SupervisorReport]) -> None:
    """Each running ``up``'s children (state, restarts), then the problems it reports."""
    for report in reports:
        for child in report.children:
            colour = {"running": "green", "gave up": "red"}.get(child.state, "yellow")
            restarts = f", {child.restarts} restarts" if child.restarts else ""
            console.print(f"up {report.name}: {child.name} [{colour}]{child.state}[/{colour}]{restarts}")
    for problem in (p for r in reports for p in r.problems):
        console.print(f"[red]{problem}[/red]")


if __name__ == "__main__":
    app()
