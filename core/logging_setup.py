"""Log output for every imaginebot process: plain text (default) or one JSON object per line.

``IMAGINEBOT_LOG_FORMAT=json`` makes every line a JSON object with ``ts``, ``level``, ``logger`` and
``message``, plus ``job_id`` / ``run_id`` on each line logged while a job (or training run) is being
handled: the worker binds them around each task (:mod:`worker.metrics`), any code can with
:func:`bind`. Secrets are removed before any formatter sees a record: :func:`setup_logging` keeps
:mod:`core.log_redaction`'s filter installed, with the web chat's own secrets added.
"""

from __future__ import annotations

import contextvars
import json
import logging
import os
import socket
import sys
import time
from typing import Any

from core.log_redaction import install_redaction
from core.settings import Settings

_ids: contextvars.ContextVar[dict[str, str]] = contextvars.ContextVar("imaginebot_log_ids", default={})  # noqa: B039
#: Record attributes (set with ``extra=``) copied into the JSON line when present.
ID_FIELDS = ("job_id", "run_id")


def bind(**ids: str | None) -> None:
    """Put ``job_id=…`` / ``run_id=…`` on every line this thread (or task) logs until :func:`clear`."""
    _ids.set({**_ids.get(), **{k: v for k, v in ids.items() if v}})


def clear() -> None:
    """Forget the ids bound by :func:`bind`."""
    _ids.set({})


def bound_ids() -> dict[str, str]:
    """The ids bound right now."""
    return dict(_ids.get())


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts (UTC, ISO 8601), level, logger, message, job/run ids, exception."""

    def __init__(self, service: str = "") -> None:
        super().__init__()
        self.service = service
        self.host = socket.gethostname()

    def format(self, record: logging.LogRecord) -> str:
        """The record as a JSON line (the message is already redacted by the record factory)."""
        line: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "service": self.service,
            "host": self.host,
            "pid": record.process,
        }
        line.update(_ids.get())
        for name in ID_FIELDS:
            value = getattr(record, name, None)
            if value:
                line[name] = str(value)
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            line["exception"] = record.exc_text
        return json.dumps(line, ensure_ascii=False)


def setup_logging(settings: Settings, service: str, level: str | int = "INFO") -> None:
    """Configure this process's logging for ``settings.log_format`` (``text`` or ``json``).

    Always (re)installs the secret redaction, with the web chat's access password and cookie key.
    In JSON mode the root logger gets one JSON handler on stderr and Celery is told to leave logging
    alone (its own setup would add a text handler).
    """
    web_secrets = (settings.web_access_password, settings.web_secret_key)
    install_redaction(settings, extra=[v for v in web_secrets if v])
    if settings.log_format != "json":
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(service or os.path.basename(sys.argv[0])))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    logging.captureWarnings(True)  # Python warnings become JSON lines too, not raw stderr text
    from celery.signals import setup_logging as celery_setup_logging

    # A receiver on this signal makes Celery skip its own logging setup and keep ours.
    celery_setup_logging.connect(_keep_our_logging, weak=False, dispatch_uid="imaginebot-json-logs")


def _keep_our_logging(**_: Any) -> None:
    """Celery's ``setup_logging`` receiver: the JSON handler is already in place."""
