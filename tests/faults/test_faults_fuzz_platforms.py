"""Fuzzing every front-end end to end: whatever text and options people send — any code point, control
characters, lone surrogates, huge numbers, repeated flags, 100 kB of text — the Telegram bot, the
Discord bot and the web chat answer with a clear message (or queue the job), never silence or a 5xx.

The parsers themselves are fuzzed harder in tests/test_command_parsing_fuzz.py; here each example goes
through the real client libraries, the fake platform servers and Redis.
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import requests
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from bots.discord.bot import ImagineBot
from bots.telegram.bot import build_application
from bots.web.server import WebServer
from core.embedded_redis import EmbeddedRedis
from core.settings import Settings
from tests.helpers.bot_threads import TelegramBotThread as TelegramThread
from tests.helpers.bot_threads import discord_bot_on_fake
from tests.helpers.fake_discord import APP_ID, FakeDiscord, snowflake
from tests.helpers.fake_telegram import FakeTelegram, user_message
from tests.helpers.settings import make_settings

TOKEN = "123:FUZZ"
PIECES = st.sampled_from(
    ["--seed", "--n", "--no", "--engine", "--size", "--steps", "dfgan", "diffusion", "=", '"', " ", "\n",
     "\t", "9" * 40, "-1", "\x00", "\x1b[2J", "\ud800", "\udfff", "‮", "🎨", "../../etc/passwd"]
)  # fmt: skip
TEXT = st.lists(st.one_of(st.text(max_size=12), PIECES), max_size=25).map("".join)
HUGE = st.sampled_from(["x" * 100_000, "--seed 1 " * 5000, "\ud800" * 1000, "🎨" * 30_000, "y" * 20_000])
FUZZ = settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck))
_message_ids = itertools.count(10)


@pytest.fixture(scope="module")
def fuzz_settings(redis_server: EmbeddedRedis, data_dir: Path) -> Settings:
    """A database of its own, no worker: jobs just queue."""
    url = redis_server.url.rsplit("/", 1)[0] + "/9"
    redis.Redis.from_url(url).flushdb()
    return make_settings(url, data_dir, rate_limit_jobs=100_000, max_queue_depth=100_000)


@pytest.fixture(scope="module")
def telegram(fuzz_settings: Settings) -> Iterator[FakeTelegram]:
    fake = FakeTelegram(TOKEN).start()
    bot_settings = fuzz_settings.model_copy(update={"telegram_token": TOKEN, "telegram_api_base": fake.url})
    runner = TelegramThread(build_application(bot_settings)).start()
    yield fake
    runner.stop()
    fake.stop()


@pytest.mark.parametrize("command", ["", "/imagine ", "/settings ", "/cancel ", "/retrain "])
@FUZZ
@given(text=st.one_of(TEXT, HUGE))
def test_telegram_answers_every_text_clearly(telegram: FakeTelegram, command: str, text: str) -> None:
    assume((command + text).strip())  # Telegram delivers no empty messages
    chat = 91_000
    message_id = next(_message_ids)
    telegram.push_update(user_message(chat, chat, (command + text)[:100_000], message_id=message_id))
    answer = telegram.wait_for(lambda c: c.method == "sendMessage" and c.reply_to == message_id, 30)
    assert answer.ok and answer.params["text"].strip()


@pytest.fixture(scope="module")
def discord(fuzz_settings: Settings) -> Iterator[tuple[FakeDiscord, ImagineBot]]:
    with discord_bot_on_fake(fuzz_settings) as (fake, client):
        yield fake, client


NUMBER = st.one_of(st.integers(-(2**70), 2**70), st.sampled_from([0, -1, 2**31, 2**53 + 1, 10**30]))


@FUZZ
@given(prompt=st.one_of(TEXT, HUGE), engine=TEXT, seed=NUMBER, steps=NUMBER, count=NUMBER)
def test_discord_answers_every_imagine_clearly(
    discord: tuple[FakeDiscord, ImagineBot], prompt: str, engine: str, seed: int, steps: int, count: int
) -> None:
    fake, _ = discord
    options = {"prompt": prompt[:6000], "engine": engine, "seed": seed, "steps": steps, "count": count}
    interaction = fake.slash_command("imagine", options, str(700_000 + next(_message_ids)), snowflake())
    callback = f"/interactions/{interaction['id']}/{interaction['token']}/callback"
    original = f"/webhooks/{APP_ID}/{interaction['token']}/messages/@original"

    def answered() -> str:
        for call in fake.calls_to("POST", callback):
            content = ((call.json or {}).get("data") or {}).get("content")
            if content:
                return str(content)
        edits = fake.calls_to("PATCH", original)
        return str((edits[0].json or {}).get("content") or "") if edits else ""

    text = fake.wait_for(answered, timeout_s=30, what="an answer to /imagine")
    assert text.strip()


@pytest.fixture(scope="module")
def web(fuzz_settings: Settings) -> Iterator[str]:
    server = WebServer(fuzz_settings, host="127.0.0.1", port=0).start()
    yield server.url
    server.stop()


@settings(max_examples=120, deadline=None, suppress_health_check=list(HealthCheck))
@given(text=st.one_of(TEXT, HUGE), extra=st.dictionaries(TEXT, st.one_of(TEXT, NUMBER), max_size=3))
def test_web_answers_every_prompt_with_json_and_never_a_5xx_but_503(web: str, text: str, extra: dict) -> None:
    body = {**extra, "conversation_id": "fuzz-" + uuid.uuid4().hex[:12], "text": text}
    response = requests.post(f"{web}/api/imagine", json=body, timeout=30)
    assert response.status_code in (202, 400, 403, 413, 429, 503), response.text[:300]
    if response.status_code == 413:  # the HTTP server refuses a body over its limit before the app
        return
    assert response.headers["Content-Type"].startswith("application/json")
    if response.status_code != 202:
        assert response.json()["error"].strip()
