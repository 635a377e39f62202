"""The web chat under waitress: security headers, a page without inline script, allowed hosts, the
access password beyond localhost, rate limits per client IP (trusted proxies) and per conversation
counted before anything is written, and half-sent requests that hold no thread."""

from __future__ import annotations

import socket
import time
import uuid
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path

import pytest
import requests

from bots.web.security import AccessPasswordMissing, client_ip, host_allowed, parse_networks
from bots.web.server import WebServer
from core.settings import Settings

STATIC = Path(__file__).resolve().parents[1] / "bots" / "web" / "static"
PASSWORD = "open-sesame-42"


def cid() -> str:
    """A fresh conversation id."""
    return "sec-" + uuid.uuid4().hex[:12]


@pytest.fixture
def serve(settings: Settings, clean_redis) -> Iterator:  # noqa: ANN001
    """``serve(**overrides)`` starts a web chat on 127.0.0.1 with those settings; all stop at the end."""
    servers: list[WebServer] = []

    def start(bind: str = "127.0.0.1", **overrides: object) -> str:
        server = WebServer(settings.model_copy(update=overrides), host=bind, port=0).start()
        servers.append(server)
        port = server.server.effective_port
        return f"http://127.0.0.1:{port}"

    yield start
    for server in servers:
        server.stop()


def remote(serve, **overrides: object) -> str:  # noqa: ANN001
    """A web chat that listens beyond localhost (0.0.0.0), reached through 127.0.0.1."""
    values = {"web_access_password": PASSWORD, "web_secret_key": "k" * 32, **overrides}
    return serve(bind="0.0.0.0", **values)


class _Page(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.inline_scripts: list[str] = []
        self.handlers: list[str] = []
        self.styles: list[str] = []
        self._in_script = False
        self._script_src = ""

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        named = dict(attrs)
        self.handlers += [name for name, _ in attrs if name.startswith("on")]
        if "style" in named:
            self.styles.append(tag)
        if tag == "script":
            self._in_script, self._script_src = True, named.get("src") or ""
            if not self._script_src:
                self.inline_scripts.append("<script> without src")

    def handle_endtag(self, tag: str) -> None:
        if tag == "script":
            self._in_script = False

    def handle_data(self, data: str) -> None:
        if self._in_script and data.strip():
            self.inline_scripts.append(data.strip()[:60])


def test_the_page_has_no_inline_script_handlers_or_styles() -> None:
    page = _Page()
    page.feed((STATIC / "index.html").read_text())
    assert page.inline_scripts == [] and page.handlers == [] and page.styles == []


def test_security_headers_on_every_response(serve) -> None:  # noqa: ANN001
    base = serve()
    for path in ("/", "/static/app.js", "/api/health", "/api/jobs/ffffffffffffffff", "/nope"):
        response = requests.get(base + path, timeout=10)
        csp = response.headers["Content-Security-Policy"]
        assert "script-src 'self'" in csp and "unsafe-inline" not in csp and "unsafe-eval" not in csp
        assert "frame-ancestors 'none'" in csp
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        assert response.headers["X-Frame-Options"] == "DENY"
        assert response.headers["Server"] == "imaginebot"  # no server version


def test_unknown_host_names_are_refused_addresses_and_allowed_names_pass(serve) -> None:  # noqa: ANN001
    base = serve(web_allowed_hosts="chat.example.org")
    port = base.rsplit(":", 1)[1]

    def status(host: str) -> int:
        return requests.get(base + "/api/health", headers={"Host": host}, timeout=10).status_code

    assert status(f"rebind.attacker.example:{port}") == 400
    assert status("evil.localhost.attacker.example") == 400
    assert status(f"localhost:{port}") == 200  # a loopback chat always answers to localhost
    assert status(f"127.0.0.1:{port}") == 200
    assert status(f"[::1]:{port}") == 200
    assert status("chat.example.org") == 200
    assert host_allowed("anything.example", ["*"])
    assert not host_allowed("localhost", ["chat.example.org"])


def test_beyond_localhost_the_chat_will_not_start_without_an_access_password(settings: Settings) -> None:
    with pytest.raises(AccessPasswordMissing, match="IMAGINEBOT_WEB_ACCESS_PASSWORD"):
        WebServer(settings.model_copy(update={"web_access_password": None}), host="0.0.0.0", port=0)


def test_beyond_localhost_everything_but_health_needs_the_password(serve) -> None:  # noqa: ANN001
    base = remote(serve)
    anonymous = requests.Session()
    health = anonymous.get(f"{base}/api/health", timeout=10)
    assert health.status_code == 200 and health.json() == {"ok": True}  # the status, nothing more
    assert anonymous.get(f"{base}/metrics", timeout=10).status_code == 200
    refused = anonymous.post(f"{base}/api/imagine", json={"conversation_id": cid(), "text": "a"}, timeout=10)
    assert refused.status_code == 401 and refused.json()["code"] == "login_required"
    assert anonymous.get(f"{base}/api/conversations/{cid()}", timeout=10).status_code == 401
    page = anonymous.get(f"{base}/", timeout=10, allow_redirects=False)
    assert page.status_code == 303 and page.headers["Location"].endswith("/login")
    login_page = anonymous.get(f"{base}/login", timeout=10)
    assert login_page.status_code == 200 and "<script" not in login_page.text

    wrong = anonymous.post(f"{base}/login", data={"password": "guess"}, timeout=10, allow_redirects=False)
    assert wrong.status_code == 403 and "ib_session" not in wrong.cookies
    forged = requests.Session()
    forged.cookies.set("ib_session", "eyJhY2Nlc3MiOiJ4In0.forged.signature")
    assert forged.get(f"{base}/api/conversations/{cid()}", timeout=10).status_code == 401

    user = requests.Session()
    ok = user.post(f"{base}/login", data={"password": PASSWORD}, timeout=10, allow_redirects=False)
    assert ok.status_code == 303
    cookie = ok.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and PASSWORD not in cookie
    assert user.get(f"{base}/", timeout=10).status_code == 200
    assert "engines" in user.get(f"{base}/api/health", timeout=10).json()  # the page's full view
    assert user.get(f"{base}/api/conversations/{cid()}", timeout=10).json() == {"messages": []}

    invited = requests.Session()
    assert invited.get(f"{base}/login?token=nope", timeout=10).status_code == 403
    link = invited.get(f"{base}/login?token={PASSWORD}", timeout=10, allow_redirects=False)
    assert link.status_code == 303
    assert invited.get(f"{base}/api/conversations/{cid()}", timeout=10).status_code == 200


def _signed_in(base: str) -> requests.Session:
    session = requests.Session()
    session.headers["X-Forwarded-For"] = "203.0.113.250"  # logins have their own budget per address
    assert session.post(f"{base}/login", data={"password": PASSWORD}, timeout=10).status_code == 200
    del session.headers["X-Forwarded-For"]
    return session


def _post(
    session: requests.Session, base: str, conversation: str, xff: str | None = None
) -> requests.Response:
    headers = {"X-Forwarded-For": xff} if xff else {}
    body = {"conversation_id": conversation, "text": ""}  # an empty prompt: refused, but still history
    return session.post(f"{base}/api/imagine", json=body, headers=headers, timeout=10)


def _history(session: requests.Session, base: str, conversation: str) -> list:
    return session.get(f"{base}/api/conversations/{conversation}", timeout=10).json()["messages"]


def test_fresh_conversation_ids_do_not_escape_the_per_ip_limit(serve) -> None:  # noqa: ANN001
    base = remote(serve, web_rate_limit_ip=3, web_trusted_proxies="")
    session = _signed_in(base)
    # Without a trusted proxy, X-Forwarded-For is the client's own claim: ignored.
    answers = [_post(session, base, cid(), xff=f"198.51.100.{i}") for i in range(3)]
    assert [a.status_code for a in answers] == [400, 400, 400]
    fresh = cid()
    rejected_before = _rejected(base)
    limited = _post(session, base, fresh, xff="198.51.100.99")
    assert limited.status_code == 429 and limited.json()["code"] == "rate_limited"
    assert int(limited.headers["Retry-After"]) >= 1
    assert _history(session, base, fresh) == []  # refused before the history was written
    assert _rejected(base) == rejected_before + 1  # and counted in the metrics


def _rejected(base: str) -> float:
    from prometheus_client.parser import text_string_to_metric_families

    text = requests.get(f"{base}/metrics", timeout=10).text
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "imaginebot_jobs_rejected_total" and sample.labels.get("reason") == "rate_limited"
    )


def test_per_conversation_limit_and_trusted_proxy_addresses(serve) -> None:  # noqa: ANN001
    base = remote(
        serve, web_rate_limit_ip=2, web_rate_limit_conversation=3, web_trusted_proxies="127.0.0.0/8"
    )
    session = _signed_in(base)
    # Behind a trusted proxy each forwarded client has its own budget...
    for client in ("192.0.2.1", "192.0.2.2"):
        assert [_post(session, base, cid(), xff=client).status_code for _ in range(2)] == [400, 400]
        assert _post(session, base, cid(), xff=client).status_code == 429
    # ...and a client cannot fake one: only the right-most hop, added by the proxy, is believed.
    assert _post(session, base, cid(), xff="192.0.2.77, 192.0.2.1").status_code == 429
    # One conversation has its own budget across addresses.
    conversation = cid()
    codes = [_post(session, base, conversation, xff=f"192.0.2.{10 + i}").status_code for i in range(4)]
    assert codes == [400, 400, 400, 429]
    assert len(_history(session, base, conversation)) == 3 * 2  # three prompts and their answers, no more


def test_client_ip_walks_forwarded_for_only_through_trusted_hops() -> None:
    trusted = parse_networks("10.0.0.0/8, 192.168.1.5")
    assert client_ip("203.0.113.9", "1.2.3.4", trusted) == "203.0.113.9"
    assert client_ip("10.1.2.3", "1.2.3.4", trusted) == "1.2.3.4"
    assert client_ip("10.1.2.3", "6.6.6.6, 1.2.3.4, 192.168.1.5", trusted) == "1.2.3.4"
    assert client_ip("10.1.2.3", "", trusted) == "10.1.2.3"


def test_half_sent_requests_hold_no_thread_and_are_closed(serve) -> None:  # noqa: ANN001
    base = serve(web_threads=2, web_channel_timeout_s=2)
    port = int(base.rsplit(":", 1)[1])
    stalled = []
    for _ in range(40):
        sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        sock.sendall(b"POST /api/imagine HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100\r\n\r\n{")
        stalled.append(sock)
    # Two threads, forty stalled clients: the chat still answers.
    assert requests.get(f"{base}/api/health", timeout=30).status_code == 200
    # And the stalled connections are closed once idle past the channel timeout (EOF, not a hang).
    received = b""
    while chunk := stalled[0].recv(1024):  # the socket's 30 s timeout raises if it is never closed
        received += chunk
    assert received == b"" or received.startswith(b"HTTP/1.1 4"), received[:80]
    for sock in stalled:
        sock.close()


CHROMIUM = Path("/usr/bin/chromium")


@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's Chromium at /usr/bin/chromium")
def test_the_page_runs_under_its_content_security_policy(serve) -> None:  # noqa: ANN001
    playwright_sync = pytest.importorskip("playwright.sync_api")
    base = serve()
    violations: list[str] = []
    with playwright_sync.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=["--headless", "--no-sandbox"])
        page = browser.new_page()
        page.on(
            "console", lambda m: violations.append(m.text) if "Content Security Policy" in m.text else None
        )
        page.goto(base + "/")
        # app.js ran (it is a static file the policy allows): it fills in the health indicator.
        page.wait_for_function("document.querySelector('#health').title !== 'Checking the server…'")
        # An injected inline script is blocked by the policy.
        page.evaluate("() => { const s = document.createElement('script'); s.textContent = "
                      "'window.__inline = 1'; document.body.appendChild(s); }")  # fmt: skip
        deadline = time.monotonic() + 10
        while not violations and time.monotonic() < deadline:
            page.wait_for_timeout(100)
        assert page.evaluate("window.__inline") is None
        browser.close()
    assert violations and all("inline" in v for v in violations), violations


def test_imaginebot_web_beyond_localhost_without_a_password_says_what_to_set(settings: Settings) -> None:
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith("IMAGINEBOT_")}
    env.update(IMAGINEBOT_REDIS_URL=str(settings.redis_url), IMAGINEBOT_WEB_PORT="0")
    result = subprocess.run(
        [sys.executable, "-m", "worker.cli", "web", "--host", "0.0.0.0"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2, result.stderr[-2000:]
    assert "IMAGINEBOT_WEB_ACCESS_PASSWORD" in result.stdout and "Traceback" not in result.stderr
