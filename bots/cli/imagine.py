"""``imaginebot imagine``: one prompt through the queue, the paired image written to a file.

With no ``IMAGINEBOT_REDIS_URL`` it brings its own: a private embedded Redis and a worker child, both
gone when the command ends.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from core.command_line import console, fail, redis_for
from core.settings import Settings

if TYPE_CHECKING:
    from core.job_client import QueueClient
    from core.jobs import JobRecord, JobRequest

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
    out: Path = typer.Option("pair.png", help="Where to write the paired PNG."),  # noqa: B008
    timeout: float = typer.Option(600, help="Seconds to wait."),
) -> None:
    """Run one prompt through the queue and write the paired image."""
    from core.child_processes import start_worker, stop_process
    from core.job_client import QueueClient
    from core.jobs import Conversation, JobRequest

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
    request = _validated(request, settings)  # bad input is refused before anything starts
    own_worker = settings.redis_url is None
    with redis_for(settings, persist=False) as settings:
        proc = start_worker(settings, "gpu,delivery", quiet=True) if own_worker else None
        try:
            client = QueueClient(settings)
            record = wait_for_job(client, _submitted(client, request).id, timeout)
        finally:
            if proc is not None:
                stop_process(proc)
        out.write_bytes(_pair_png(client, record))
    timings = ", ".join(f"{r.engine} {r.version} {r.seconds:.2f} s" for r in record.results)
    console.print(f"[green]wrote {out}[/green] (seed {record.seed}; {timings})")


def _validated(request: JobRequest, settings: Settings) -> JobRequest:
    """The request as the queue will take it; exits with the rule it breaks."""
    from core.errors import InputError
    from core.validation import validate_request

    try:
        return validate_request(request, settings)
    except InputError as exc:
        raise fail(exc.message) from None


def _submitted(client: QueueClient, request: JobRequest) -> JobRecord:
    """Queue the job; exits with the reason when it is refused (rate limit, full queue)."""
    from core.errors import InputError

    try:
        return client.submit(request)
    except InputError as exc:
        raise fail(exc.message) from None


def _pair_png(client: QueueClient, record: JobRecord) -> bytes:
    """The finished job's paired PNG; exits with the job's status and error when it has none."""
    png = client.images.get(record.pair_key) if record.pair_key is not None else None
    if record.status.value != "done" or png is None:
        raise fail(f"job {record.id} {record.status.value}: {record.error or ''}", 1)
    return png


def wait_for_job(client: QueueClient, job_id: str, timeout_s: float) -> JobRecord:
    """Poll the job, showing queue position and progress, until it is finished and delivered; exits
    when ``timeout_s`` passes first."""
    deadline = time.monotonic() + timeout_s
    with console.status("queued…") as status:
        while True:
            record, position = client.status(job_id)
            if record.status.finished and record.delivered_at is not None:
                return record
            if time.monotonic() > deadline:
                raise fail(f"gave up waiting after {timeout_s:.0f} s (job {job_id} is still queued)", 1)
            if position is not None:
                status.update(f"queued, position {position} (waiting for a worker)")
            elif record.progress is not None:
                p = record.progress
                status.update(f"drawing: {p.engine} step {p.step}/{p.total}")
            else:
                status.update(record.status.value + "…")
            time.sleep(0.1)


if __name__ == "__main__":
    app()
