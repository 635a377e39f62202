"""Where the Bot API lives (Telegram's, a local Bot API server, or a test server), its error helpers,
and where an answer to a message goes (its forum topic, a reply to it)."""

from __future__ import annotations

import datetime as dtm
import warnings

from telegram import Message, ReplyParameters
from telegram.error import RetryAfter

from core.settings import Settings


def api_urls(settings: Settings) -> tuple[str, str]:
    """``(base_url, base_file_url)`` for python-telegram-bot; the token is appended by the library."""
    base = settings.telegram_api_base.rstrip("/")
    return f"{base}/bot", f"{base}/file/bot"


def retry_after_seconds(exc: RetryAfter) -> float:
    """Seconds Telegram asked us to wait (the library returns an int or a timedelta, by version)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # PTB 22 warns that the int form will become a timedelta
        value = exc.retry_after
    return value.total_seconds() if isinstance(value, dtm.timedelta) else float(value)


def thread_id_of(message: Message) -> int | None:
    """The forum topic of ``message``; None outside topics (replies there need no thread id)."""
    return message.message_thread_id if message.is_topic_message else None


def replying_to(message: Message) -> dict[str, object]:
    """The arguments of a send method that answer ``message``: in its topic, quoting it."""
    return {
        "message_thread_id": thread_id_of(message),
        "reply_parameters": ReplyParameters(message.message_id, allow_sending_without_reply=True),
    }
