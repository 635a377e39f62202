"""The Discord bot process: a discord.py client with the slash commands of ``commands.py`` and the
result buttons of ``buttons.py``.

``IMAGINEBOT_DISCORD_API_BASE`` moves both the REST API (discord.py builds every URL from
``discord.http.Route.BASE``) and the gateway (asked from ``GET /gateway/bot`` at login, instead of
discord.py's built-in ``wss://gateway.discord.gg``) to another server: a proxy or a test fake.
"""

from __future__ import annotations

import asyncio
import logging

import discord
import yarl
from discord import app_commands
from discord.gateway import DiscordWebSocket
from discord.http import Route

from bots.discord.buttons import ResultButton, on_modal_submit
from bots.discord.commands import COMMANDS, on_command_error
from bots.discord.progress import ProgressTracker
from bots.stopping import on_stop_signals
from core.conversation import ConversationService
from core.job_client import QueueClient
from core.settings import Settings

log = logging.getLogger(__name__)


class ImagineBot(discord.Client):
    """The client: a command tree, the conversation service (and its queue) and the progress editor."""

    def __init__(self, settings: Settings, queue: QueueClient, sync_commands: bool = True) -> None:
        # Slash commands and buttons arrive without any privileged (or other) intent.
        # Prompts are echoed back: "@everyone" or a role mention in one must never ping anybody. The
        # client's default covers every send and edit, interaction responses included.
        super().__init__(intents=discord.Intents.none(), allowed_mentions=discord.AllowedMentions.none())
        self.settings = settings
        self.queue = queue
        self.service = ConversationService(settings, queue)
        self.sync_commands = sync_commands
        self.tree = app_commands.CommandTree(self)
        self.tree.error(on_command_error)
        self.progress = ProgressTracker(self, settings.progress_interval_s)

    async def login(self, token: str) -> None:
        """Point REST at ``settings.discord_api_base``, log in, then look up the gateway there."""
        # Route.BASE is a class attribute read when each request is built; one bot per process.
        Route.BASE = self.settings.discord_api_base.rstrip("/")
        await super().login(token)
        _, url, _ = await self.http.get_bot_gateway()
        # A non-sharded discord.py client connects to DEFAULT_GATEWAY (also its fallback after an
        # invalidated session); use the one this API base names.
        DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(url)

    async def setup_hook(self) -> None:
        """Add the slash commands and the persistent buttons, and publish the commands."""
        for command in COMMANDS:
            self.tree.add_command(command)
        self.add_dynamic_items(ResultButton)
        if self.sync_commands:
            commands = await self.tree.sync()
            log.info("synced %d slash commands", len(commands))

    async def on_interaction(self, interaction: discord.Interaction) -> None:
        """A remix modal's answer (read here, from the interaction, so it works after a restart)."""
        await on_modal_submit(interaction)

    async def close(self) -> None:
        """Stop progress edits, then disconnect."""
        await self.progress.close()
        await super().close()


def build_client(
    settings: Settings, queue: QueueClient | None = None, sync_commands: bool = True
) -> ImagineBot:
    """The bot for ``settings`` (start it with ``await client.start(token)`` or :func:`run`)."""
    return ImagineBot(settings, queue or QueueClient(settings), sync_commands=sync_commands)


def run(settings: Settings) -> None:
    """Run the bot until it is stopped (Ctrl-C / SIGTERM). Needs ``IMAGINEBOT_DISCORD_TOKEN``.

    A stop signal closes the client; the process exits within a bounded time even when the Discord
    API (or Redis) does not answer.
    """
    if not settings.discord_token:
        raise ValueError("IMAGINEBOT_DISCORD_TOKEN is not set")
    token = settings.discord_token
    client = build_client(settings)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        closing: list[asyncio.Task[None]] = []
        on_stop_signals(loop, lambda: closing.append(loop.create_task(client.close())))
        try:
            async with client:
                await client.start(token)
        except Exception:
            if not closing:
                raise
            log.info("stopped while connecting", exc_info=True)  # closed on request mid-login

    asyncio.run(main())
