"""Serving the web chat with waitress, in the foreground or in a thread.

Why waitress (and not gunicorn with threads): waitress reads each request completely, headers and
body, in its I/O loop before a worker thread sees it, so clients that send half a request hold a
socket, not a thread (Werkzeug's development server gave each a thread: 40 of them stalled the chat),
and ``channel_timeout`` closes them. It is pure Python, runs in-process (``imaginebot up`` and the
tests start it in a thread, port 0 works), and has no fork: the app's Redis client and Celery producer
are made once and shared by its threads. gunicorn's gthread worker hands a connection to a thread as
soon as it is readable, forks per worker, and does not run on Windows or macOS without extra care.
"""

from __future__ import annotations

import threading
from typing import Any

from waitress.server import create_server

from bots.web.api import MAX_MULTIPART_BODY
from bots.web.app import create_app
from core.settings import Settings

MAX_HEADER_BYTES = 16 * 1024


class WebServer:
    """The web chat on ``host:port`` (port 0 picks a free one). ``start()`` runs it in a thread."""

    def __init__(self, settings: Settings, host: str | None = None, port: int | None = None) -> None:
        host = host or settings.web_host
        if host != settings.web_host:  # the access rules depend on where it listens
            settings = settings.model_copy(update={"web_host": host})
        self.app = create_app(settings)
        self.server: Any = create_server(
            self.app,
            host=host,
            port=settings.web_port if port is None else port,
            threads=settings.web_threads,
            channel_timeout=settings.web_channel_timeout_s,
            cleanup_interval=max(1, settings.web_channel_timeout_s // 3),
            max_request_header_size=MAX_HEADER_BYTES,
            # A picture upload (multipart) is the largest body; the app keeps JSON bodies small. The
            # margin lets a slightly too big picture reach the app for its JSON "image_too_big".
            max_request_body_size=MAX_MULTIPART_BODY + 1024 * 1024,
            connection_limit=max(100, settings.web_threads * 25),
            # Keep reading a connection while its request runs, so a browser that leaves an event
            # stream is noticed at once (``waitress.client_disconnected``, bots/web/events.py).
            channel_request_lookahead=1,
            ident="imaginebot",
            clear_untrusted_proxy_headers=False,  # bots.web.security decides whom to believe
        )
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:8080``."""
        host, port = self.server.effective_host, self.server.effective_port
        return f"http://{f'[{host}]' if ':' in str(host) else host}:{port}"

    def start(self) -> WebServer:
        """Serve in a background thread."""
        self._thread = threading.Thread(target=self.server.run, name="web-chat", daemon=True)
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        """Serve in this thread until :meth:`stop` (or Ctrl-C, which returns)."""
        try:
            self.server.run()
        except KeyboardInterrupt:
            pass

    def _close_channels(self) -> None:
        # Runs in the I/O loop's thread (via the trigger): closing every channel empties the loop's
        # map, so run() returns.
        for channel in list(self.server._map.values()):
            channel.close()

    def stop(self) -> None:
        """Stop serving: close the listening socket and every connection, stop the threads."""
        if self._thread is not None and self._thread.is_alive():
            self.server.trigger.pull_trigger(self._close_channels)
            self._thread.join(timeout=10)
        else:
            self._close_channels()
        self.server.task_dispatcher.shutdown()

    def server_close(self) -> None:
        """Close the listening socket (after :meth:`serve_forever` returned)."""
        self.stop()
