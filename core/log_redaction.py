"""Secrets never reach a log: every log record (and every uncaught traceback) is redacted.

python-telegram-bot talks to ``https://api.telegram.org/bot<TOKEN>/sendPhoto``, and httpx logs each
request's URL at INFO; discord.py, the Hugging Face client and a Redis URL with a password can do the
same in error messages. Redaction is installed once per process at the logging layer, by a log-record
factory, so it covers every logger and every handler (Celery's, rich's, journald's) at any level the
user picks, and the message is already clean when a formatter sees it.

What is redacted: the values of the settings that hold secrets (tokens, passwords, the password in
``REDIS_URL``), and anything shaped like a Telegram bot token in a ``/bot<token>`` URL path even when it
is not ours (a second bot, a typo'd environment).
"""

from __future__ import annotations

import logging
import re
import sys
import threading
import traceback
from collections.abc import Iterable
from types import TracebackType
from urllib.parse import urlsplit

from core.settings import Settings

#: What a secret is replaced with.
MASK = "[redacted]"

# Telegram bot tokens ("<digits>:<url-safe chars>") in Bot API paths: /bot<token>/, /file/bot<token>/.
_TELEGRAM_TOKEN_IN_PATH = re.compile(r"(/bot)\d{3,}:[A-Za-z0-9_-]{10,}")
# user:password@ in any URL (redis://:pw@host, https://user:pw@proxy).
_URL_PASSWORD = re.compile(r"(\b[a-z][a-z0-9+.-]*://[^/\s:@]*:)[^@\s/]+(@)", re.IGNORECASE)

_lock = threading.Lock()
_secrets: set[str] = set()
_installed = False


def secrets_of(settings: Settings) -> list[str]:
    """The secret values configured in ``settings`` (empty ones left out)."""
    values = [
        settings.discord_token,
        settings.telegram_token,
        settings.telegram_webhook_secret,
        settings.hf_api_token,
        settings.web_admin_password,
        settings.web_access_password,
        settings.web_secret_key,
    ]
    if settings.redis_url:
        password = urlsplit(settings.redis_url).password
        values.append(password)
    # Very short values would mask ordinary words; nobody's token or password is under 4 characters.
    return [v for v in values if v and len(v) >= 4]


def redact(text: str) -> str:
    """``text`` with every known secret, Telegram token path and URL password replaced by ``[redacted]``."""
    if not text:
        return text
    with _lock:
        known = sorted(_secrets, key=len, reverse=True)
    for secret in known:
        if secret in text:
            text = text.replace(secret, MASK)
    text = _TELEGRAM_TOKEN_IN_PATH.sub(rf"\g<1>{MASK}", text)
    return _URL_PASSWORD.sub(rf"\g<1>{MASK}\g<2>", text)


def _redact_record(record: logging.LogRecord) -> logging.LogRecord:
    """Render the record's message once, redacted; pre-render its traceback and stack, redacted."""
    try:
        message = record.getMessage()
    except Exception:  # a bad format string: keep logging's own error path, but still redact
        message = f"{record.msg!r} % {record.args!r}"
    clean = redact(message)
    if clean != message or record.args:
        record.msg, record.args = clean, ()
    if record.exc_info and not record.exc_text:
        record.exc_text = redact(_format_exception(*record.exc_info))
    elif record.exc_text:
        record.exc_text = redact(record.exc_text)
    if record.stack_info:
        record.stack_info = redact(record.stack_info)
    return record


def _format_exception(
    kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None
) -> str:
    text = "".join(traceback.format_exception(kind, value, tb))
    return text[:-1] if text.endswith("\n") else text


def install_redaction(settings: Settings | None = None, extra: Iterable[str] = ()) -> None:
    """Redact this process's logs and uncaught tracebacks from now on (idempotent).

    Each call adds the secrets of ``settings`` (default: read from the environment) and ``extra``.
    """
    global _installed
    found = secrets_of(settings if settings is not None else Settings())
    with _lock:
        _secrets.update(found)
        _secrets.update(v for v in extra if v and len(v) >= 4)
        if _installed:
            return
        _installed = True

    previous_factory = logging.getLogRecordFactory()

    def factory(*args: object, **kwargs: object) -> logging.LogRecord:
        return _redact_record(previous_factory(*args, **kwargs))

    logging.setLogRecordFactory(factory)

    def excepthook(kind: type[BaseException], value: BaseException, tb: TracebackType | None) -> None:
        sys.stderr.write(redact(_format_exception(kind, value, tb)) + "\n")

    def thread_excepthook(hook_args: threading.ExceptHookArgs) -> None:
        if hook_args.exc_type is SystemExit:
            return
        name = hook_args.thread.name if hook_args.thread is not None else "?"
        body = _format_exception(hook_args.exc_type, hook_args.exc_value, hook_args.exc_traceback)
        sys.stderr.write(f"Exception in thread {name}:\n{redact(body)}\n")

    sys.excepthook = excepthook
    threading.excepthook = thread_excepthook
