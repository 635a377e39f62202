"""The web chat's guards: security headers, allowed hosts, the access password, per-client rate limits.

Installed on the Flask app by :func:`install` (one call in ``create_app``):

- **Headers on every response**: a Content-Security-Policy without inline script (the page's JS and
  CSS are static files), ``X-Content-Type-Options: nosniff``, frame denial (``frame-ancestors 'none'``
  and ``X-Frame-Options: DENY``), no referrer.
- **Allowed hosts**: a request whose ``Host`` is neither an IP address nor a name in
  ``IMAGINEBOT_WEB_ALLOWED_HOSTS`` gets 400. A DNS-rebinding page reaches a localhost chat under its
  own domain name, so it is refused; probes that use the pod's IP still work.
- **Beyond localhost** (``web_host`` not loopback):

  - the chat refuses to start without ``IMAGINEBOT_WEB_ACCESS_PASSWORD``; a browser gives it once at
    ``/login`` (or follows an invite link ``/login?token=<password>``) and then holds a signed,
    HttpOnly, SameSite=Strict session cookie. ``/api/health`` (only ``{"ok": true}`` before sign-in),
    ``/metrics`` and the login page are open;
  - every POST (prompt, cancel) counts against a limit per client IP and per conversation (sign-in
    attempts have their own, stricter limit per IP), *before* the handler runs: a refused request
    writes nothing, so neither fresh conversation ids nor bad prompts can fill the history or the
    shared queue. The client IP is the connecting address, or, when that is a trusted proxy
    (``IMAGINEBOT_WEB_TRUSTED_PROXIES``), the address it reports in ``X-Forwarded-For`` (the
    right-most one not itself a trusted proxy).

- ``/metrics``: this process's Prometheus metrics, including the queue depths.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import secrets
from typing import Any

import redis
from flask import Flask, Response, jsonify, redirect, request, session
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from core.errors import InputError
from core.ids import is_conversation_id
from core.limits import RateLimiter
from core.metrics import job_rejected, watch_queue_depth
from core.settings import Settings

CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data: blob:",  # the favicon is a data: URI
        "connect-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ]
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
}
#: Paths anyone may reach without the access password (probes, scrapes, the login page itself).
OPEN_PATHS = ("/login", "/api/health", "/metrics")
LOGIN_ATTEMPTS = 10  # per client IP per rate window


class AccessPasswordMissing(RuntimeError):
    """The web chat would listen beyond localhost with no access password set."""


def parse_networks(text: str) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    """Networks from a comma list of addresses and CIDRs (``10.0.0.0/8, 192.168.1.5``)."""
    return [ipaddress.ip_network(part.strip(), strict=False) for part in text.split(",") if part.strip()]


def _in(address: str, networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network]) -> bool:
    try:
        ip = ipaddress.ip_address(address.strip())
    except ValueError:
        return False
    return any(ip in net for net in networks)


def client_ip(
    remote_addr: str, forwarded_for: str | None, trusted: list[ipaddress.IPv4Network | ipaddress.IPv6Network]
) -> str:
    """The client's address: ``remote_addr``, or walking ``X-Forwarded-For`` right to left while the
    hop we trust reports it (a client can prepend anything, so the left part is never believed)."""
    ip = remote_addr
    hops = [h.strip() for h in (forwarded_for or "").split(",") if h.strip()]
    while hops and _in(ip, trusted):
        ip = hops.pop()
    return ip


def host_allowed(host: str, allowed: list[str]) -> bool:
    """Whether a ``Host`` header (with or without port) names an IP address or an allowed name."""
    if "*" in allowed:
        return True
    name = host.strip().lower()
    if name.startswith("["):  # [::1]:8080
        name = name[1 : name.find("]")]
    elif name.count(":") == 1:
        name = name.rsplit(":", 1)[0]
    try:
        ipaddress.ip_address(name)
        return True  # rebinding needs a domain name; an address literal is what the user typed
    except ValueError:
        pass
    return name in allowed


def _password_tag(secret_key: bytes, password: str) -> str:
    """What the session cookie holds: changing the password (or the key) logs everyone out."""
    return hmac.new(secret_key, b"access:" + password.encode(), hashlib.sha256).hexdigest()[:32]


LOGIN_PAGE = """<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <meta name="viewport" content="width=device-width, initial-scale=1">
  <meta name="color-scheme" content="dark">
  <title>imaginebot: sign in</title>
  <link rel="stylesheet" href="/login/style.css">
</head>
<body class="login">
  <form method="post" action="/login" class="login-box">
    <h1>imaginebot</h1>
    <p>{message}</p>
    <label for="password">Access password</label>
    <input id="password" name="password" type="password" autocomplete="current-password" autofocus required>
    <button type="submit">Sign in</button>
  </form>
</body>
</html>
"""
LOGIN_CSS = """
body.login { background: #14161c; color: #e8e8ee; font: 16px system-ui, sans-serif; display: grid;
  place-items: center; min-height: 100vh; margin: 0; }
.login-box { display: grid; gap: .6rem; width: min(22rem, 90vw); }
.login-box input, .login-box button { font: inherit; padding: .6rem; border-radius: .5rem;
  border: 1px solid #444; }
.login-box button { background: #7c8cff; color: #fff; border: 0; cursor: pointer; }
"""


class Guards:
    """The guards' state and their Flask hooks (``before_request``, ``after_request``, the login views)."""

    def __init__(self, settings: Settings, client: redis.Redis, key: bytes) -> None:
        self.local = settings.web_is_local
        self.password = settings.web_access_password
        self.tag = _password_tag(key, self.password) if self.password else ""
        hosts = [h.strip().lower() for h in settings.web_allowed_hosts.split(",") if h.strip()]
        self.allowed_hosts = hosts + (["localhost"] if self.local else [])
        self.trusted = parse_networks(settings.web_trusted_proxies)
        window = settings.rate_limit_window_s
        self.per_ip = RateLimiter(client, settings.web_rate_limit_ip, window)
        self.per_conversation = RateLimiter(client, settings.web_rate_limit_conversation, window)
        self.logins = RateLimiter(client, LOGIN_ATTEMPTS, window)

    def this_client(self) -> str:
        """The address of the client making the current request."""
        return client_ip(request.remote_addr or "", request.headers.get("X-Forwarded-For"), self.trusted)

    def signed_in(self) -> bool:
        """Whether the current request carries a session signed in with the current password."""
        return hmac.compare_digest(str(session.get("access", "")), self.tag)

    def guard(self) -> Any:
        """Before every request: allowed host; beyond localhost, signed in and within the POST limits."""
        if not host_allowed(request.host, self.allowed_hosts):
            return jsonify({"error": "Unknown host.", "code": "bad_host"}), 400
        if self.local:
            return None
        path = request.path
        if not any(path == p or path.startswith(p + "/") for p in OPEN_PATHS) and not self.signed_in():
            if path.startswith("/api/"):
                return jsonify({"error": "Sign in first (/login).", "code": "login_required"}), 401
            return redirect("/login", code=303)
        if request.method == "POST" and path != "/login":  # logins have their own, stricter limit
            try:
                self.per_ip.hit(f"web-ip:{self.this_client()}")
                data = request.get_json(silent=True) if request.is_json else None
                cid = data.get("conversation_id") if isinstance(data, dict) else None
                if path.startswith("/api/") and is_conversation_id(cid):
                    self.per_conversation.hit(f"web-conversation:{cid}")
            except InputError as exc:
                return _refuse(exc, 429)
        return None

    def headers(self, response: Response) -> Response:
        """After every request: the security headers (and a bare health answer before sign-in)."""
        if (
            not self.local
            and request.path == "/api/health"
            and response.status_code == 200
            and not self.signed_in()
        ):
            # Probes need only the status; the workers and problems it lists are for signed-in users.
            response = jsonify({"ok": True})
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        return response

    def sign_in(self, given: str) -> bool:
        """Start a signed-in session when ``given`` is the access password."""
        if not self.password or not hmac.compare_digest(given.encode(), self.password.encode()):
            return False
        session.clear()
        session["access"] = self.tag
        session.permanent = True
        return True

    def login_form(self) -> Any:
        """``GET /login``: the form, or an invite link ``/login?token=<password>``."""
        token = request.args.get("token")
        if self.local:
            return redirect("/", code=303)
        if token is None:
            return _login_page("Enter the access password.")
        try:
            self.logins.hit(f"web-login:{self.this_client()}")
        except InputError as exc:
            return _login_page(exc.message, 429)
        if self.sign_in(token):
            return redirect("/", code=303)
        return _login_page("That invite link is not valid.", 403)

    def login_submit(self) -> Any:
        """``POST /login``: check the password (a few tries per client per window)."""
        try:
            self.logins.hit(f"web-login:{self.this_client()}")
        except InputError as exc:
            return _login_page(exc.message, 429)
        if self.sign_in(str(request.form.get("password", ""))):
            return redirect("/", code=303)
        return _login_page("Wrong password.", 403)


def _refuse(exc: InputError, status: int) -> tuple[Response, int]:
    job_rejected(exc.code)
    response = jsonify(exc.to_dict())
    if exc.retry_after is not None:
        response.headers["Retry-After"] = str(int(exc.retry_after + 0.999))
    return response, status


def _login_page(message: str, status: int = 200) -> tuple[Response, int]:
    html = LOGIN_PAGE.format(message=message)  # fixed texts only: nothing a visitor sent
    return Response(html, mimetype="text/html", headers={"Cache-Control": "no-store"}), status


def _login_css() -> Response:
    return Response(LOGIN_CSS, mimetype="text/css")


def _metrics() -> Response:
    return Response(generate_latest(), mimetype=CONTENT_TYPE_LATEST)


def install(app: Flask, settings: Settings, client: redis.Redis) -> None:
    """Add the guards and ``/metrics`` to ``app``; ``client`` is the queue's Redis.

    Raises :class:`AccessPasswordMissing` when the chat listens beyond localhost without a password.
    """
    if not settings.web_is_local and not settings.web_access_password:
        raise AccessPasswordMissing(
            f"The web chat would listen on {settings.web_host}, beyond localhost, open to anyone: "
            "set IMAGINEBOT_WEB_ACCESS_PASSWORD (and IMAGINEBOT_WEB_SECRET_KEY), or listen on 127.0.0.1."
        )
    key = (settings.web_secret_key or "").encode() or secrets.token_bytes(32)
    app.secret_key = key
    app.config.update(
        SESSION_COOKIE_HTTPONLY=True, SESSION_COOKIE_SAMESITE="Strict", SESSION_COOKIE_NAME="ib_session"
    )
    guards = Guards(settings, client, key)
    watch_queue_depth(client)
    app.before_request(guards.guard)
    app.after_request(guards.headers)
    app.add_url_rule("/login", "login_form", guards.login_form, methods=["GET"])
    app.add_url_rule("/login", "login_submit", guards.login_submit, methods=["POST"])
    app.add_url_rule("/login/style.css", "login_css", _login_css)
    app.add_url_rule("/metrics", "metrics", _metrics)
