"""``imaginebot discord``: run the Discord bot."""

from __future__ import annotations

import typer

from core.command_line import bot_settings
from core.settings import Settings

app = typer.Typer(help="The Discord bot.", no_args_is_help=True)


@app.command()
def discord() -> None:
    """Run the Discord bot (needs IMAGINEBOT_DISCORD_TOKEN and IMAGINEBOT_REDIS_URL)."""
    from bots.discord.bot import run

    run(bot_settings("discord", Settings().discord_token))


if __name__ == "__main__":
    app()
