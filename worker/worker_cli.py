"""``imaginebot worker``: a Celery worker on the shared Redis (one per GPU with ``--gpus``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import typer

from core.command_line import console, fail, observe, shared_settings
from core.task_contract import ALL_QUEUES, QUEUE_GPU, model_queue

if TYPE_CHECKING:
    from celery import Celery

    from core.settings import Settings

app = typer.Typer(help="Celery workers.", no_args_is_help=True)


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
    settings = shared_settings()
    queues = _with_model_queues(settings, queues)
    if gpus is not None:
        args = ["--queues", queues, "--concurrency", str(concurrency), "--loglevel", loglevel]
        args += [] if preload else ["--no-preload"]
        raise typer.Exit(_run_per_gpu(settings, gpus, args, loglevel))
    from worker.app import create_app
    from worker.heartbeat import start_heartbeat

    observe(settings, "worker", level=loglevel.upper())
    celery_app = create_app(settings)
    start_heartbeat(celery_app, queues.split(","))  # "starting" while the engines load, then "ready"
    if preload and any(q.startswith(QUEUE_GPU) for q in queues.split(",")):
        _preload_engines(celery_app, settings)
    pool = "solo" if concurrency == 1 else "threads"
    node = ["-n", hostname] if hostname else []
    celery_app.worker_main(
        ["worker", "-Q", queues, "-P", pool, "-c", str(concurrency), "--loglevel", loglevel,
         "--without-gossip", "--without-mingle", *node]
    )  # fmt: skip


def _with_model_queues(settings: Settings, queues: str) -> str:
    """``queues`` checked, with ``gpu`` standing for the queues of the diffusion models this worker
    serves (``IMAGINEBOT_WORKER_MODELS``): ``gpu`` itself when it serves the default model, and
    ``gpu.<name>`` for each other one. ``gpu.<name>`` may also be named directly."""
    from core.model_catalog import DEFAULT_MODEL, served_models

    try:
        served = served_models(settings)
    except ValueError as exc:
        raise fail(str(exc)) from None
    model_queues = [model_queue(name) for name in served]
    known = [*ALL_QUEUES, *(model_queue(name) for name in served if name != DEFAULT_MODEL)]
    wanted = [q.strip() for q in queues.split(",") if q.strip()]
    unknown = [q for q in wanted if q not in known]
    if unknown:
        raise fail(f"Unknown queue(s): {', '.join(unknown)}. Queues: {', '.join(known)}.")
    expanded = [q for name in wanted for q in (model_queues if name == QUEUE_GPU else [name])]
    return ",".join(dict.fromkeys(expanded))


def _run_per_gpu(settings: Settings, gpus: str, worker_args: list[str], loglevel: str) -> int:
    """Run one ``imaginebot worker`` child per GPU in ``gpus`` until they end; their exit code."""
    from worker.gpus import GpuSpecError, parse_gpus, run_per_gpu

    try:
        gpu_ids = parse_gpus(gpus)
    except GpuSpecError as exc:
        raise fail(str(exc)) from None
    console.print(f"one worker per GPU: {', '.join(gpu_ids)}")
    observe(settings, "worker", metrics=False, level=loglevel.upper())  # each child serves its own
    return run_per_gpu(gpu_ids, worker_args, settings.metrics_port)


def _preload_engines(celery_app: Celery, settings: Settings) -> None:
    """Load every enabled engine now: the first job should not wait for model loading, and a broken
    model fails here, loudly."""
    from core.model_catalog import served_models
    from worker.runtime import runtime_for

    runtime = runtime_for(celery_app)
    for name in settings.enabled_engines:
        for model in served_models(settings) if name == "diffusion" else [None]:
            label = f"{name} ({model})" if model else name
            with console.status(f"loading engine {label}…"):
                engine = runtime.engines.get(name, model)
            console.print(f"engine {label} ready: {engine.info.version}")


if __name__ == "__main__":
    app()
