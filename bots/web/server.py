"""Serving the web chat: a threaded WSGI server that can run in the foreground or a thread."""

from __future__ import annotations

import threading

from werkzeug.serving import BaseWSGIServer, make_server

from bots.web.app import create_app
from core.settings import Settings


class WebServer:
    """The web chat on ``host:port`` (port 0 picks a free one). ``start()`` runs it in a thread."""

    def __init__(self, settings: Settings, host: str | None = None, port: int | None = None) -> None:
        self.app = create_app(settings)
        self.server: BaseWSGIServer = make_server(
            host or settings.web_host,
            settings.web_port if port is None else port,
            self.app,
            threaded=True,
        )
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:8080``."""
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> WebServer:
        """Serve in a background thread."""
        self._thread = threading.Thread(target=self.server.serve_forever, name="web-chat", daemon=True)
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        """Serve in this thread until :meth:`stop` (or Ctrl-C)."""
        self.server.serve_forever()

    def stop(self) -> None:
        """Stop serving and close the socket."""
        self.server.shutdown()
        self.server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
