"""``imaginebot web``: run only the web chat, against a shared Redis and workers elsewhere."""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING

import typer

from core.command_line import console, fail, observe, shared_settings
from core.settings import Settings

if TYPE_CHECKING:  # the server (Flask, waitress) loads only when a command runs, not for --help
    from bots.web.server import WebServer

app = typer.Typer(help="The web chat.", no_args_is_help=True)


def open_web_chat(settings: Settings, host: str | None, port: int | None) -> WebServer:
    """The web chat, bound now (a busy port fails first); exits with the reason when its access
    rules forbid listening there (beyond localhost without an access password)."""
    from bots.web.security import AccessPasswordMissing
    from bots.web.server import WebServer

    try:
        return WebServer(settings, host=host, port=port)
    except AccessPasswordMissing as exc:
        raise fail(str(exc)) from None


@app.command()
def web(
    host: str = typer.Option(None, help="Host (default IMAGINEBOT_WEB_HOST)."),
    port: int = typer.Option(None, help="Port (default IMAGINEBOT_WEB_PORT)."),
) -> None:
    """Run only the web chat (needs IMAGINEBOT_REDIS_URL and workers elsewhere)."""
    settings = shared_settings()
    observe(settings, "web", metrics=False)  # the web chat serves its metrics at /metrics
    server = open_web_chat(settings, host, port)
    console.print(f"web chat on {server.url}")
    with contextlib.suppress(KeyboardInterrupt):
        server.serve_forever()


if __name__ == "__main__":
    app()
