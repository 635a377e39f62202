"""The Telegram bot process: ``imaginebot telegram`` calls :func:`run`.

It long-polls Telegram for updates (no public URL needed) or, with ``IMAGINEBOT_TELEGRAM_WEBHOOK_URL``
set, runs a webhook server that Telegram posts updates to (python-telegram-bot's ``webhooks`` extra,
tornado; the secret token, when set, is checked on every request). It answers in chat and queues jobs;
results are posted by the delivery worker (``bots/telegram/send.py``). ``IMAGINEBOT_TELEGRAM_API_BASE`` points
it at another Bot API server (a local ``telegram-bot-api``, a proxy, or a test server).
"""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import Any
from urllib.parse import urlsplit

from telegram import BotCommand, Update
from telegram.error import TelegramError
from telegram.ext import Application, ApplicationBuilder

from bots.stopping import on_stop_signals
from bots.telegram.api import api_urls
from bots.telegram.datasets import register_datasets
from bots.telegram.handlers import COMMANDS, register
from core.job_client import QueueClient
from core.settings import Settings

log = logging.getLogger(__name__)
ALLOWED_UPDATES = [Update.MESSAGE, Update.CALLBACK_QUERY]


def build_application(settings: Settings, queue: QueueClient | None = None) -> Application:
    """The bot's :class:`~telegram.ext.Application` with every handler registered (not started)."""
    if not settings.telegram_token:
        raise ValueError("IMAGINEBOT_TELEGRAM_TOKEN is not set")
    base_url, base_file_url = api_urls(settings)
    application = (
        ApplicationBuilder()
        .token(settings.telegram_token)
        .base_url(base_url)
        .base_file_url(base_file_url)
        .post_init(_announce_commands)
        .build()
    )
    register(application, settings, queue or QueueClient(settings))
    register_datasets(application)
    return application


async def _announce_commands(application: Application) -> None:
    """Fill Telegram's command menu; a failure here must not stop the bot."""
    try:
        await application.bot.set_my_commands([BotCommand(name, text) for name, text in COMMANDS])
    except TelegramError as exc:
        log.warning("could not set the bot's command list: %s", exc)


def run(settings: Settings) -> None:
    """Run the bot until interrupted (Ctrl-C / SIGTERM): webhook mode when
    ``IMAGINEBOT_TELEGRAM_WEBHOOK_URL`` is set, else long polling."""
    serve(build_application(settings), settings)


def serve(application: Application, settings: Settings, **run_options: Any) -> None:
    """Run ``application`` until stopped, by webhook or by polling as ``settings`` say.

    ``run_options`` go on to python-telegram-bot's ``run_webhook`` / ``run_polling`` (e.g.
    ``stop_signals=None`` to run it outside the main thread). Unless they name ``stop_signals``,
    SIGTERM / Ctrl-C stop it gracefully and the process exits within a bounded time even when the
    Bot API server does not answer (the updater's last getUpdates and the shutdown wait on it).
    """
    if "stop_signals" not in run_options and threading.current_thread() is threading.main_thread():
        # python-telegram-bot runs on the current event loop: ours, with the bounded stop handlers.
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        on_stop_signals(loop, _raise_system_exit)
        run_options["stop_signals"] = None
    # An unreachable Bot API at start is waited out (a stop signal still ends the wait), rather
    # than a crash for the supervisor to count.
    run_options.setdefault("bootstrap_retries", -1)
    if settings.telegram_webhook_url:
        options = webhook_options(settings)
        log.info(
            "telegram bot: webhook %s, listening on %s:%s",
            settings.telegram_webhook_url,
            options["listen"],
            options["port"],
        )
        application.run_webhook(**options, allowed_updates=ALLOWED_UPDATES, **run_options)
    else:
        log.info("telegram bot polling %s", settings.telegram_api_base)
        application.run_polling(allowed_updates=ALLOWED_UPDATES, **run_options)


def _raise_system_exit() -> None:
    # What python-telegram-bot's own stop handler does: unwinds run_polling into its shutdown.
    raise SystemExit


def webhook_options(settings: Settings) -> dict[str, Any]:
    """``run_webhook`` arguments: the server listens at the public URL's path (a reverse proxy in
    front passes the path through) and tells Telegram the URL and the secret token."""
    if not settings.telegram_webhook_url:
        raise ValueError("IMAGINEBOT_TELEGRAM_WEBHOOK_URL is not set")
    return {
        "listen": settings.telegram_webhook_listen,
        "port": settings.telegram_webhook_port,
        "url_path": urlsplit(settings.telegram_webhook_url).path.strip("/"),
        "webhook_url": settings.telegram_webhook_url,
        "secret_token": settings.telegram_webhook_secret or None,
    }
