"""The fake platform servers as module fixtures use them: started for a block, and the session's
Celery worker pointed at them."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Protocol, TypeVar

import pytest

from core.settings import Settings
from tests.helpers.fake_discord import FakeDiscord
from tests.helpers.fake_telegram import FakeTelegram


class _Server(Protocol):
    def start(self) -> object: ...

    def stop(self) -> None: ...


Server = TypeVar("Server", bound=_Server)


@contextmanager
def running(server: Server) -> Iterator[Server]:
    """``server`` started for the block, stopped after it (errors included)."""
    server.start()
    try:
        yield server
    finally:
        server.stop()


@contextmanager
def worker_posting_to(
    settings: Settings,
    telegram: FakeTelegram | None = None,
    discord: FakeDiscord | None = None,
    discord_token: str = "bot-token",
) -> Iterator[pytest.MonkeyPatch]:
    """The session's worker (which reads ``settings``) holds the bot tokens and posts to these fakes
    until the block ends, then ``settings`` is restored. Yields the patcher, for more patches that
    must end with the block."""
    with pytest.MonkeyPatch.context() as mp:
        if telegram is not None:
            mp.setattr(settings, "telegram_token", telegram.token)
            mp.setattr(settings, "telegram_api_base", telegram.url)
        if discord is not None:
            mp.setattr(settings, "discord_api_base", discord.api_base)
            mp.setattr(settings, "discord_token", discord_token)
        yield mp
