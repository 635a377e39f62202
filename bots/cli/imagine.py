"""``imaginebot imagine``: one prompt through the queue, the paired image written to a file.

With no ``IMAGINEBOT_REDIS_URL`` it brings its own: a private embedded Redis and a worker child, both
gone when the command ends.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from core.command_line import console, fail, redis_for
from core.errors import InputError
from core.settings import Settings

if TYPE_CHECKING:
    from core.conversation import Caller, Imagine
    from core.job_client import QueueClient
    from core.jobs import JobRecord

app = typer.Typer(help="Draw from the command line.", no_args_is_help=True)


@app.command()
def imagine(
    prompt: str = typer.Argument(..., help='What to draw, e.g. "a red circle".'),
    engine: str = typer.Option(None, help="Engines, comma separated (default: the local ones)."),
    seed: int = typer.Option(None, help="Seed (default: random)."),
    steps: int = typer.Option(None, help="Diffusion steps."),
    n: int = typer.Option(1, help="Images per engine."),
    size: int = typer.Option(None, help="Image size in pixels."),
    negative: str = typer.Option(None, "--no", help="Negative prompt."),
    image: Path = typer.Option(None, help="Start from this picture (PNG, JPEG or WebP): image-to-image."),  # noqa: B008
    strength: float = typer.Option(None, help="With --image: how much is redrawn, 0.0-1.0."),
    model: str = typer.Option(None, help="Diffusion model by name (see `imaginebot models`)."),
    lora: list[str] = typer.Option(None, help="LoRA NAME[:WEIGHT]; may be given several times."),  # noqa: B008
    out: Path = typer.Option("pair.png", help="Where to write the paired PNG."),  # noqa: B008
    timeout: float = typer.Option(600, help="Seconds to wait."),
) -> None:
    """Run one prompt through the queue and write the paired image."""
    from bots.cli.conversation import cli_caller
    from core.child_processes import start_worker, stop_process
    from core.conversation import Imagine
    from core.model_catalog import parse_lora
    from core.prompt import split_engines

    settings = Settings()
    caller = cli_caller(settings)
    picture = _read_picture(image)
    try:
        loras = [parse_lora(text) for text in lora or []]
    except InputError as exc:
        raise fail(exc.message) from None
    action = Imagine(
        prompt=prompt, engines=split_engines(engine or ""), seed=seed, count=n, steps=steps, size=size,
        negative_prompt=negative, strength=strength, model=model, loras=loras,
    )  # fmt: skip
    _check(caller, action, settings, picture is not None)  # refused before anything starts
    own_worker = settings.redis_url is None
    with redis_for(settings, persist=False) as settings:
        proc = start_worker(settings, "gpu,delivery", quiet=True) if own_worker else None
        try:
            client, job_id = _queue(settings, caller, action, picture)
            record = wait_for_job(client, job_id, timeout)
        finally:
            if proc is not None:
                stop_process(proc)
        out.write_bytes(_pair_png(client, record))
    timings = ", ".join(f"{r.engine} {r.version} {r.seconds:.2f} s" for r in record.results)
    console.print(f"[green]wrote {out}[/green] (seed {record.seed}; {timings})")


def _check(caller: Caller, action: Imagine, settings: Settings, with_picture: bool = False) -> None:
    """Refuse, with the rule it breaks, a prompt the queue would refuse: before a Redis or a worker
    is started for it (the service checks it again, with the caller's defaults, when it queues).
    ``with_picture``: the prompt comes with a picture (checked already), stored only once queued."""
    from dataclasses import replace

    from core.uploads import UPLOAD_PREFIX
    from core.validation import build_request, validate_request

    if with_picture:
        action = replace(action, image_key=f"{UPLOAD_PREFIX}{'0' * 32}")  # stands for the upload
    try:
        validate_request(build_request(action, caller.user, caller.conversation), settings)
    except InputError as exc:
        raise fail(exc.message) from None


def _read_picture(path: Path | None) -> bytes | None:
    """The checked PNG of ``--image`` (None without it); exits with the reason for a missing file or
    a picture the chat front-ends would refuse too (type, size, pixel count)."""
    from core.uploads import check_upload

    if path is None:
        return None
    try:
        return check_upload(path.read_bytes())
    except OSError as exc:
        raise fail(f"cannot read {path}: {exc.strerror or exc}") from None
    except InputError as exc:
        raise fail(f"{path}: {exc.message}") from None


def _queue(
    settings: Settings, caller: Caller, action: Imagine, picture: bytes | None = None
) -> tuple[QueueClient, str]:
    """Queue the prompt (with ``picture`` stored as an upload) through the conversation service, as
    every front-end does; exits with the reason when it is refused (rate limit, full queue)."""
    from bots.cli.conversation import cli_service
    from core.conversation import Queued

    service = cli_service(settings)
    if picture is not None:
        action.image_key = service.uploads.put(picture)
    reply = service.handle(caller, action)
    if not isinstance(reply, Queued):
        raise fail(reply.text)
    return service.queue, reply.record.id


def _pair_png(client: QueueClient, record: JobRecord) -> bytes:
    """The finished job's paired PNG; exits with the job's status and error when it has none."""
    png = client.images.get(record.pair_key) if record.pair_key is not None else None
    if record.status.value != "done" or png is None:
        raise fail(f"job {record.id} {record.status.value}: {record.error or ''}", 1)
    return png


def wait_for_job(client: QueueClient, job_id: str, timeout_s: float) -> JobRecord:
    """Poll the job, showing its status line (queue position, whether a worker is up, drawing
    progress), until it is finished and delivered; exits when ``timeout_s`` passes first."""
    from core.conversation import status_line
    from core.heartbeats import job_notice

    deadline = time.monotonic() + timeout_s
    with console.status("queued…") as status:
        while True:
            record, position = client.status(job_id)
            if record.status.finished and record.delivered_at is not None:
                return record
            if time.monotonic() > deadline:
                raise fail(f"gave up waiting after {timeout_s:.0f} s (job {job_id} is still queued)", 1)
            status.update(status_line(record, position, job_notice(client.redis, record)))
            time.sleep(0.1)


if __name__ == "__main__":
    app()
