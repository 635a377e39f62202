"""The web chat's extra guard on admin commands beyond localhost: the admin password.

A web conversation id is only a browser's random token, so beyond localhost ``/retrain`` (start and
cancel) also needs ``IMAGINEBOT_WEB_ADMIN_PASSWORD``. A wrong password and a conversation that is
not an admin's get the same answer, and each client has few tries per window.
"""

from __future__ import annotations

import hmac
from typing import Any

import redis
from flask import request

from bots.web.security import client_ip, parse_networks
from core.errors import InputError
from core.limits import RateLimiter
from core.settings import Settings

#: Refused ``/retrain`` attempts a client may make per window (beyond localhost), against guessing.
ADMIN_PASSWORD_TRIES = 5
ADMIN_PASSWORD_WINDOW_S = 15 * 60


class AdminPassword:
    """Checks the admin password of the current request (``settings.web_host``: the address the
    server really binds; the server passes it in)."""

    def __init__(self, settings: Settings, client: redis.Redis) -> None:
        self.settings = settings
        self.guesses = RateLimiter(client, ADMIN_PASSWORD_TRIES, ADMIN_PASSWORD_WINDOW_S)
        self.proxies = parse_networks(settings.web_trusted_proxies)

    def check(self, data: dict[str, Any], cid: str, command: str = "/retrain") -> None:
        """Raise :class:`InputError` unless the chat is local, or ``data`` carries the right admin
        password for an admin's conversation ``cid``; the answers name ``command`` (``/retrain``,
        ``/dataset``)."""
        settings = self.settings
        if settings.web_is_local:
            return
        wanted = settings.web_admin_password
        if not wanted:
            raise InputError(
                "admin_password_unset",
                f"{command} from the web chat is off: it listens beyond localhost and "
                "IMAGINEBOT_WEB_ADMIN_PASSWORD is not set.",
            )
        address = client_ip(request.remote_addr or "", request.headers.get("X-Forwarded-For"), self.proxies)
        client_key = f"web-admin-password:{address}"
        wait = self.guesses.blocked_for(client_key)
        if wait is not None:
            raise InputError(
                "too_many_attempts",
                f"Too many refused {command} attempts from here. Try again in {wait:.0f} s.",
                retry_after=wait,
            )
        given = data.get("admin_password")
        given_bytes = given.encode("utf-8", "surrogatepass") if isinstance(given, str) else b""
        right = hmac.compare_digest(given_bytes, wanted.encode())
        if not (right and settings.is_admin("web", cid)):
            self.guesses.record(client_key)
            raise InputError(
                "bad_admin_password",
                f"{command} was refused: it needs an admin's conversation and the right admin password.",
            )
