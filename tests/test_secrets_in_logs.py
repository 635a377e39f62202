"""No token or password reaches a log line or a traceback, in any process, at any log level."""

from __future__ import annotations

import io
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from core.embedded_redis import free_port
from core.log_redaction import MASK, install_redaction, redact
from core.settings import Settings
from tests.helpers.fake_discord import FakeDiscord
from tests.helpers.fake_telegram import FakeTelegram, user_message

TELEGRAM_TOKEN = "123456:SECRETtelegramTOKENabcdef0123"
DISCORD_TOKEN = "discord-SECRET-bot-token-0123456789"
HF_TOKEN = "hf_SECRETtokenForTheHostedEngine"
ADMIN_PASSWORD = "SECRET-admin-password"
ALL_SECRETS = (TELEGRAM_TOKEN, DISCORD_TOKEN, HF_TOKEN, ADMIN_PASSWORD, "SECRETtelegramTOKENabcdef0123")


@pytest.fixture
def captured() -> Iterator[io.StringIO]:
    """Every record of every logger, at DEBUG, formatted with its traceback."""
    install_redaction(
        Settings(
            telegram_token=TELEGRAM_TOKEN,
            discord_token=DISCORD_TOKEN,
            hf_api_token=HF_TOKEN,
            web_admin_password=ADMIN_PASSWORD,
            web_access_password="SECRET-access-password",
            redis_url="redis://:SECRET-redis-pw@127.0.0.1:6379/0",
        )
    )
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield stream
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)


def test_httpx_request_lines_keep_the_url_but_not_the_token(captured: io.StringIO) -> None:
    url = f"http://127.0.0.1:8081/bot{TELEGRAM_TOKEN}/sendPhoto"
    logging.getLogger("httpx").info('HTTP Request: %s %s "%s"', "POST", url, "HTTP/1.1 200 OK")
    logging.getLogger("telegram.ext").debug("Calling Bot API endpoint `%s` with parameters", url)
    text = captured.getvalue()
    assert f"/bot{MASK}/sendPhoto" in text
    assert "SECRET" not in text


def test_secrets_in_messages_arguments_and_tracebacks_are_redacted(captured: io.StringIO) -> None:
    log = logging.getLogger("worker.anything")
    log.warning("Authorization: Bot %s", DISCORD_TOKEN)
    log.error("hf token %s and redis redis://:SECRET-redis-pw@10.0.0.2:6379/0", HF_TOKEN)
    log.debug(f"password was {ADMIN_PASSWORD}")  # already formatted by the caller
    log.info("signed in with %r", "SECRET-access-password")
    try:
        raise RuntimeError(f"POST https://api.telegram.org/bot{TELEGRAM_TOKEN}/getMe failed")
    except RuntimeError:
        log.exception("delivery failed")
    text = captured.getvalue()
    assert "delivery failed" in text and "RuntimeError" in text and "Traceback" in text
    assert text.count(MASK) >= 6
    assert "SECRET" not in text


def test_a_telegram_token_we_were_not_told_about_is_still_masked_in_a_bot_api_url() -> None:
    other = "https://api.telegram.org/bot987654321:AAHsomeOtherBotsToken_xyz/getUpdates"
    assert redact(other) == f"https://api.telegram.org/bot{MASK}/getUpdates"
    assert redact("a robot/bot on a branch") == "a robot/bot on a branch"  # ordinary text stays


def _clean_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("IMAGINEBOT_")}
    env.update(
        IMAGINEBOT_DATA_DIR=str(tmp_path / "data"),
        IMAGINEBOT_DEVICE="cpu",
        IMAGINEBOT_TORCH_THREADS="1",
        **extra,
    )
    return env


def test_no_process_of_up_logs_a_token_while_it_serves_telegram_discord_and_the_web(tmp_path: Path) -> None:
    """`up` with both bots and every secret set; a Telegram prompt and a web prompt are delivered;
    the whole tree's output (Redis, both workers, both bots, the web chat) never shows a secret."""
    telegram, discord = FakeTelegram(TELEGRAM_TOKEN).start(), FakeDiscord().start()
    port = free_port()
    env = _clean_env(
        tmp_path,
        IMAGINEBOT_TELEGRAM_TOKEN=TELEGRAM_TOKEN,
        IMAGINEBOT_TELEGRAM_API_BASE=telegram.url,
        IMAGINEBOT_DISCORD_TOKEN=DISCORD_TOKEN,
        IMAGINEBOT_DISCORD_API_BASE=discord.api_base,
        IMAGINEBOT_HF_API_TOKEN=HF_TOKEN,
        IMAGINEBOT_WEB_ADMIN_PASSWORD=ADMIN_PASSWORD,
        IMAGINEBOT_PROGRESS_INTERVAL_S="0.3",
    )
    log_file = tmp_path / "up.log"
    with log_file.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "worker.cli", "up", "--port", str(port)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=tmp_path,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                requests.get(base + "/api/health", timeout=2).raise_for_status()
                break
            except requests.RequestException:
                assert time.monotonic() < deadline and proc.poll() is None, log_file.read_text()
                time.sleep(0.2)
        discord.identified.wait(60)
        telegram.push_update(user_message(4242, 4242, "/imagine a red circle --steps 2", message_id=10))
        telegram.wait_for(lambda c: c.method in ("sendPhoto", "sendMediaGroup") and c.ok, timeout_s=180)
        job = requests.post(
            base + "/api/imagine",
            json={"conversation_id": "secrets-test", "text": "a blue square --steps 2"},
            timeout=10,
        ).json()["job"]
        while not requests.get(f"{base}/api/jobs/{job['id']}", timeout=5).json()["job"]["delivered"]:
            assert time.monotonic() < deadline + 180, "web job not delivered"
            time.sleep(0.2)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=90)
        finally:
            if proc.poll() is None:
                proc.kill()
            telegram.stop()
            discord.stop()
    output = log_file.read_text(errors="replace")
    assert "imaginebot is up" in output
    # The delivery worker did log its Bot API requests (the lines that used to carry the token).
    assert f"/bot{MASK}/send" in output, output[-4000:]
    leaked = [s for s in ALL_SECRETS if s in output]
    assert leaked == [], f"{len(leaked)} secret(s) in the logs"
