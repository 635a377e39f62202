"""The local web chat (Flask): a page plus a small JSON API that scripts can drive too.

:func:`create_app` wires the parts: the guards (:mod:`bots.web.security`), the page and its static
files, the JSON API (:mod:`bots.web.api`, where the endpoints are listed) and the JSON error answers.
"""

from __future__ import annotations

import logging
from pathlib import Path

import kombu.exceptions
import redis
from flask import Flask, Response, jsonify, send_from_directory

from bots.web.admin_password import ADMIN_PASSWORD_TRIES, ADMIN_PASSWORD_WINDOW_S, AdminPassword
from bots.web.api import ERROR_STATUS, WebChat, api, job_view
from bots.web.datasets_api import datasets_api
from bots.web.events import events_api
from bots.web.security import install as install_security
from core.conversation import ConversationService
from core.job_client import QueueClient, QueueUnavailable
from core.settings import Settings

__all__ = [
    "ADMIN_PASSWORD_TRIES",
    "ADMIN_PASSWORD_WINDOW_S",
    "ERROR_STATUS",
    "MAX_BODY",
    "create_app",
    "job_view",
]

log = logging.getLogger(__name__)
STATIC_DIR = Path(__file__).parent / "static"
MAX_BODY = 16 * 1024


def create_app(settings: Settings, queue: QueueClient | None = None) -> Flask:
    """The web chat app, talking to the queue described by ``settings``."""
    app = Flask(__name__, static_folder=None)
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY
    client = queue or QueueClient(settings)
    # Headers, allowed hosts, access password, rate limits, /metrics: before any view runs.
    install_security(app, settings, client.redis)
    service = ConversationService(settings, client)
    app.extensions["imaginebot"] = WebChat(settings, client, service, AdminPassword(settings, client.redis))
    app.add_url_rule("/", "index", index)
    app.add_url_rule("/static/<path:name>", "static_file", static_file)
    app.register_blueprint(api)
    app.register_blueprint(datasets_api)
    app.register_blueprint(events_api)  # Server-Sent Events, previews
    app.register_error_handler(413, too_large)
    app.register_error_handler(redis.RedisError, queue_unavailable)
    app.register_error_handler(kombu.exceptions.OperationalError, queue_unavailable)
    app.register_error_handler(500, internal_error)
    return app


# no-cache: browsers revalidate (cheap 304s), so an upgrade never runs an old app.js.
def index() -> Response:
    """The chat page."""
    return send_from_directory(STATIC_DIR, "index.html", max_age=0)


def static_file(name: str) -> Response:
    """The page's scripts, styles and icons."""
    response = send_from_directory(STATIC_DIR, name, max_age=0)
    response.headers["Cache-Control"] = "no-cache"
    return response


def too_large(_: Exception) -> tuple[Response, int]:
    """A body over :data:`MAX_BODY`."""
    return jsonify({"error": "Request too large.", "code": "too_large"}), 413


def queue_unavailable(exc: Exception) -> tuple[Response, int]:
    """Redis down or unreachable: a clear JSON 503, and the client knows when to come back."""
    log.warning("queue unavailable: %s", exc)
    response = jsonify({"error": QueueUnavailable.message, "code": QueueUnavailable.code})
    response.headers["Retry-After"] = str(int(QueueUnavailable.retry_after))
    return response, 503


def internal_error(_: Exception) -> tuple[Response, int]:
    """Anything unexpected: a JSON 500 that says nothing about the inside."""
    return jsonify({"error": "Something went wrong on our side. Try again.", "code": "internal"}), 500
