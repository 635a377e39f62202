"""While Redis is down, the Telegram and Discord bots answer a prompt with "the queue is unavailable"
(nothing hangs, nothing is silently dropped), and once Redis is back they queue again without a restart.

Each test runs its own redis-server (with AOF) and kills it for real.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from bots.discord.bot import build_client
from bots.telegram.bot import build_application
from core.embedded_redis import EmbeddedRedis
from core.job_client import QUEUE_UNAVAILABLE_TEXT
from core.store import PENDING_KEY
from tests.helpers.bot_threads import DiscordBotThread as DiscordThread
from tests.helpers.bot_threads import TelegramBotThread as TelegramThread
from tests.helpers.fake_discord import APP_ID, FakeDiscord, snowflake
from tests.helpers.fake_telegram import FakeTelegram, user_message
from tests.helpers.settings import make_settings

TOKEN = "123:REDISDOWN"


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[EmbeddedRedis]:
    server = EmbeddedRedis(tmp_path / "redis", persist=True).start()
    yield server
    server.stop()


def kill(server: EmbeddedRedis) -> None:
    """SIGKILL the redis-server: no shutdown, no goodbye to clients."""
    assert server.process is not None
    server.process.kill()
    server.process.wait(timeout=10)


def restart(server: EmbeddedRedis) -> None:
    """Start it again on the same port and directory (the AOF brings the data back)."""
    server.start()


def pending(server: EmbeddedRedis) -> int:
    return int(redis.Redis.from_url(server.url).zcard(PENDING_KEY))


def test_telegram_answers_queue_unavailable_while_redis_is_down_and_recovers(
    own_redis: EmbeddedRedis, data_dir: Path
) -> None:
    fake = FakeTelegram(TOKEN).start()
    settings = make_settings(own_redis.url, data_dir, telegram_token=TOKEN, telegram_api_base=fake.url)
    runner = TelegramThread(build_application(settings)).start()
    try:
        chat = 81_001
        fake.push_update(user_message(chat, chat, "a red circle --engine dfgan", message_id=1))
        fake.wait_for(lambda c: c.method == "editMessageText" and c.params["chat_id"] == chat)
        assert pending(own_redis) == 1

        kill(own_redis)
        sent = time.monotonic()
        fake.push_update(user_message(chat, chat, "a blue square --engine dfgan", message_id=2))
        answer = fake.wait_for(
            lambda c: (
                c.params.get("chat_id") == chat and QUEUE_UNAVAILABLE_TEXT in (c.params.get("text") or "")
            )
        )
        answered_s = answer.at - sent
        fake.push_update(user_message(chat, chat, "/queue", message_id=3))
        fake.wait_for(lambda c: c.method == "sendMessage" and c.reply_to == 3)  # not only prompts

        restart(own_redis)
        assert pending(own_redis) == 1  # the job queued before the outage survived it (AOF)
        fake.push_update(user_message(chat, chat, "a green star --engine dfgan", message_id=4))
        fake.wait_for(
            lambda c: c.method == "editMessageText" and "position 2" in (c.params.get("text") or ""),
        )
        assert pending(own_redis) == 2
        print(f"\nFIGURES redis-down telegram: 'queue unavailable' answered in {answered_s:.2f} s")
    finally:
        runner.stop()
        fake.stop()


def test_discord_answers_queue_unavailable_while_redis_is_down_and_recovers(
    own_redis: EmbeddedRedis, data_dir: Path
) -> None:
    fake = FakeDiscord().start()
    settings = make_settings(own_redis.url, data_dir, discord_api_base=fake.api_base, discord_token="bot-tok")
    client = build_client(settings)
    runner = DiscordThread(client).start()
    try:
        fake.wait_for(lambda: runner.error or client.is_ready(), timeout_s=30, what="the bot to be ready")
        assert runner.error is None, runner.error
        kill(own_redis)
        user, channel = "770001", snowflake()
        interaction = fake.slash_command(
            "imagine", {"prompt": "a red circle", "engine": "dfgan"}, user, channel
        )
        callback = f"/interactions/{interaction['id']}/{interaction['token']}/callback"
        original = f"/webhooks/{APP_ID}/{interaction['token']}/messages/@original"

        def told() -> bool:
            bodies = [c.json for c in fake.calls_to("POST", callback) + fake.calls_to("PATCH", original)]
            texts = [str((b or {}).get("data", b) or "") for b in bodies]
            return any(QUEUE_UNAVAILABLE_TEXT in t for t in texts)

        fake.wait_for(told, timeout_s=30, what="the 'queue unavailable' answer")
        # A button under an old result answers the same way (it reads the job from Redis).
        from bots.discord.components import action_rows
        from core.result_buttons import ResultButton

        job_id = "0123456789abcdef"
        info = ResultButton("ℹ️ Info", f"i:{job_id}")
        press = fake.button_click(info.data, user, channel, action_rows([[info]]))
        press_callback = f"/interactions/{press['id']}/{press['token']}/callback"
        fake.wait_for(
            lambda: any(
                QUEUE_UNAVAILABLE_TEXT in str((c.json or {}).get("data", ""))
                for c in fake.calls_to("POST", press_callback)
            ),
            timeout_s=30,
            what="the button's 'queue unavailable' answer",
        )

        restart(own_redis)
        again = fake.slash_command("imagine", {"prompt": "a blue square", "engine": "dfgan"}, user, channel)
        original = f"/webhooks/{APP_ID}/{again['token']}/messages/@original"
        fake.wait_for(
            lambda: any(
                "position 1" in (c.json or {}).get("content", "") for c in fake.calls_to("PATCH", original)
            ),
            timeout_s=30,
            what="the job queued after Redis came back",
        )
        assert pending(own_redis) == 1
    finally:
        runner.stop()
        fake.stop()
