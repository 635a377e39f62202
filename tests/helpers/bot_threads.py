"""Running the real bot clients (discord.py, python-telegram-bot) in a thread against the fake servers."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import yarl

if TYPE_CHECKING:  # each platform's library is imported only by the tests that run its bot
    from telegram.ext import Application

    from bots.discord.bot import ImagineBot
    from core.settings import Settings
    from tests.helpers.fake_discord import FakeDiscord

#: The token the Discord tests log in with (the fake accepts any).
DISCORD_BOT_TOKEN = "fake-bot-token"
#: discord.py's own defaults, restored when a bot thread stops.
DISCORD_API_BASE = "https://discord.com/api/v10"
DISCORD_GATEWAY = "wss://gateway.discord.gg/"


class DiscordBotThread:
    """Runs the bot's event loop in a thread; :meth:`stop` closes the client and ends the thread."""

    def __init__(self, client: ImagineBot, token: str = DISCORD_BOT_TOKEN) -> None:
        self.client = client
        self.token = token
        self.loop = asyncio.new_event_loop()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._main, name="discord-bot", daemon=True)

    def _main(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_until_complete(self.client.start(self.token, reconnect=False))
        except BaseException as exc:  # reported by the fixture
            self.error = exc
        finally:
            self.loop.run_until_complete(self.loop.shutdown_asyncgens())
            self.loop.close()

    def start(self) -> DiscordBotThread:
        """Start the client (login, command sync, gateway connect)."""
        self.thread.start()
        return self

    def stop(self) -> None:
        """Close the client, wait for the thread (bounded), and point discord.py back at Discord's own
        addresses (building the client moved them to the fake) for any other test in this process."""
        from discord.gateway import DiscordWebSocket
        from discord.http import Route

        if self.thread.is_alive():
            asyncio.run_coroutine_threadsafe(self.client.close(), self.loop).result(20)
        self.thread.join(20)
        Route.BASE = DISCORD_API_BASE
        DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(DISCORD_GATEWAY)
        assert not self.thread.is_alive(), "the bot thread did not stop"


class TelegramBotThread:
    """Runs the bot's Application (polling the fake) on its own event loop in a thread."""

    def __init__(self, application: Application) -> None:
        self.application = application
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(
            target=self.loop.run_until_complete, args=(self._serve(),), daemon=True
        )
        self.started = threading.Event()
        self.error: BaseException | None = None
        self._stop: asyncio.Event | None = None

    def start(self) -> TelegramBotThread:
        self.thread.start()
        assert self.started.wait(30), "bot did not start"
        if self.error:
            raise self.error
        return self

    async def _serve(self) -> None:
        from bots.telegram.bot import ALLOWED_UPDATES

        self._stop = asyncio.Event()
        try:
            async with self.application:
                updater = self.application.updater
                assert updater is not None
                await updater.start_polling(poll_interval=0.05, timeout=1, allowed_updates=ALLOWED_UPDATES)
                await self.application.start()
                self.started.set()
                await self._stop.wait()
                await updater.stop()
                await self.application.stop()
        except BaseException as exc:  # surfaced by start()
            self.error = exc
            self.started.set()

    def stop(self) -> None:
        if self._stop is not None:
            self.loop.call_soon_threadsafe(self._stop.set)
        self.thread.join(timeout=30)
        assert not self.thread.is_alive(), "bot did not stop"
        self.loop.close()


@contextmanager
def discord_bot_on_fake(settings: Settings) -> Iterator[tuple[FakeDiscord, ImagineBot]]:
    """A fake Discord and the real bot (built from ``settings``) logged in to it and ready, for the
    block; both stopped after it."""
    from bots.discord.bot import build_client
    from tests.helpers.fake_discord import FakeDiscord

    fake = FakeDiscord().start()
    client = build_client(
        settings.model_copy(update={"discord_api_base": fake.api_base, "discord_token": DISCORD_BOT_TOKEN})
    )
    runner = DiscordBotThread(client).start()
    try:
        fake.wait_for(lambda: runner.error or client.is_ready(), timeout_s=30, what="the bot to be ready")
        assert runner.error is None, runner.error
        yield fake, client
    finally:
        runner.stop()
        fake.stop()
