"""``imaginebot telegram``: run the Telegram bot."""

from __future__ import annotations

import typer

from core.command_line import bot_settings
from core.settings import Settings

app = typer.Typer(help="The Telegram bot.", no_args_is_help=True)


@app.command()
def telegram() -> None:
    """Run the Telegram bot, long-polling (needs IMAGINEBOT_TELEGRAM_TOKEN and IMAGINEBOT_REDIS_URL)."""
    from bots.telegram.bot import run

    run(bot_settings("telegram", Settings().telegram_token))


if __name__ == "__main__":
    app()
