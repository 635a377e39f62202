"""``imaginebot show JOB``: a finished job's paired image written again, with its settings (what
``/show`` does in the chats). It reads the shared Redis, so it needs ``IMAGINEBOT_REDIS_URL``."""

from __future__ import annotations

from pathlib import Path

import typer

from core.command_line import console, fail, shared_settings

app = typer.Typer(help="Bring back a job's result.", no_args_is_help=True)


@app.command()
def show(
    job_id: str = typer.Argument(..., help="The job id (16 hex digits, as /queue and captions show it)."),
    out: Path = typer.Option("pair.png", help="Where to write the paired PNG."),  # noqa: B008
) -> None:
    """Write a job's paired image again and print its settings: your own job, or the command line's."""
    from bots.cli.conversation import cli_caller, cli_service
    from core.conversation import FromText, JobSettings, ResultShown, Show

    settings = shared_settings()
    service = cli_service(settings)
    reply = service.handle(cli_caller(settings), FromText(Show, job_id))
    if not isinstance(reply, ResultShown):
        raise fail(reply.text)
    record = reply.record
    png = service.queue.images.get(record.pair_key) if record.pair_key else None
    if png is None:
        raise fail("That picture has expired; send the prompt again.", 1)
    out.write_bytes(png)
    console.print(f"[green]wrote {out}[/green] {JobSettings(record).text}")


if __name__ == "__main__":
    app()
