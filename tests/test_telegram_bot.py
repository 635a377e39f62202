"""The Telegram bot end to end: python-telegram-bot polling a fake Bot API server, a real Redis, and the
session's real Celery worker delivering through ``bots/telegram/send.py`` to the same fake.

Every check is on what the fake received: the chat, the forum topic, the message replied to, the
uploaded picture, the caption and the buttons.
"""

from __future__ import annotations

import asyncio
import io
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from telegram.ext import Application

from bots.telegram.bot import ALLOWED_UPDATES, build_application
from bots.telegram.handlers import TelegramHandlers
from core.embedded_redis import EmbeddedRedis
from core.settings import Settings
from tests.conftest import make_settings
from tests.fake_telegram import Call, FakeTelegram, button_press, user_message

TOKEN = "123:TEST"
ADMIN_ID = 999
FORUM_CHAT = -1001234
TOPIC = 77
WAIT_S = 60.0


class BotThread:
    """Runs the bot's Application (polling the fake) on its own event loop in a thread."""

    def __init__(self, application: Application) -> None:
        self.application = application
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(
            target=self.loop.run_until_complete, args=(self._serve(),), daemon=True
        )
        self.started = threading.Event()
        self.error: BaseException | None = None
        self._stop: asyncio.Event | None = None

    def start(self) -> BotThread:
        self.thread.start()
        assert self.started.wait(30), "bot did not start"
        if self.error:
            raise self.error
        return self

    async def _serve(self) -> None:
        self._stop = asyncio.Event()
        try:
            async with self.application:
                updater = self.application.updater
                assert updater is not None
                await updater.start_polling(poll_interval=0.05, timeout=1, allowed_updates=ALLOWED_UPDATES)
                await self.application.start()
                self.started.set()
                await self._stop.wait()
                await updater.stop()
                await self.application.stop()
        except BaseException as exc:  # surfaced by start()
            self.error = exc
            self.started.set()

    def stop(self) -> None:
        if self._stop is not None:
            self.loop.call_soon_threadsafe(self._stop.set)
        self.thread.join(timeout=30)
        assert not self.thread.is_alive(), "bot did not stop"
        self.loop.close()


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeTelegram]:
    server = FakeTelegram(TOKEN).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def worker_to_fake(settings: Settings, celery_worker: Any, fake: FakeTelegram) -> Iterator[None]:
    """The session's worker holds the bot token and posts to the fake (restored after this module)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(settings, "telegram_token", TOKEN)
        mp.setattr(settings, "telegram_api_base", fake.url)
        yield


@pytest.fixture(scope="module")
def bot(
    redis_server: EmbeddedRedis, data_dir: Path, fake: FakeTelegram, worker_to_fake: None
) -> Iterator[TelegramHandlers]:
    """The bot, polling the fake; yields its handlers (for the queue client they use)."""
    bot_settings = make_settings(
        redis_server.url,
        data_dir,
        telegram_token=TOKEN,
        telegram_api_base=fake.url,
        progress_interval_s=0.3,
        admin_ids=f"telegram:{ADMIN_ID}",
    )
    application = build_application(bot_settings)
    runner = BotThread(application).start()
    yield application.bot_data["handlers"]
    runner.stop()


def reply_to(fake: FakeTelegram, method: str, chat_id: int, message_id: int, **match: Any) -> Call:
    """Wait for a successful ``method`` call answering ``message_id`` in ``chat_id``."""
    return fake.wait_for(
        lambda c: (
            c.method == method
            and c.ok
            and c.params.get("chat_id") == chat_id
            and c.reply_to == message_id
            and all(c.params.get(k) == v for k, v in match.items())
        ),
        WAIT_S,
    )


def job_id_of(photo: Call) -> str:
    """The job id on the result's reroll button."""
    (job_id,) = [d[3:] for d in photo.callback_data if d.startswith("rr:")]
    return job_id


def assert_picture(photo: Call) -> Image.Image:
    """The upload is a whole, valid PNG or JPEG."""
    data = photo.files["photo"]
    with Image.open(io.BytesIO(data)) as image:
        assert image.format in ("PNG", "JPEG")
        image.load()
        return image


def seed_of(photo: Call) -> int:
    match = re.search(r"seed (\d+)", photo.params["caption"])
    assert match, photo.params["caption"]
    return int(match.group(1))


def test_private_message_is_a_prompt_and_the_picture_comes_back_as_a_reply(
    bot: TelegramHandlers, fake: FakeTelegram
) -> None:
    chat = user = 1001
    fake.push_update(
        user_message(chat, user, "a red circle --engine dfgan --steps 2 --seed 7", message_id=11)
    )

    status = reply_to(fake, "sendMessage", chat, 11)
    assert status.params["text"].startswith("Queued")
    status_id = status.result["message_id"]
    photo = reply_to(fake, "sendPhoto", chat, 11)
    assert "message_thread_id" not in photo.params
    image = assert_picture(photo)
    assert image.width > 256  # the labelled pair image, not a bare 64-px cell
    assert seed_of(photo) == 7 and "dfgan" in photo.params["caption"]
    job_id = job_id_of(photo)
    assert re.fullmatch(r"[0-9a-f]{16}", job_id)
    assert set(photo.callback_data) == {f"rr:{job_id}", f"vd:{job_id}:dfgan", f"st:{job_id}"}
    assert all(len(d.encode()) <= 64 for d in photo.callback_data)

    # The status message showed the queue position, then the sender removed it.
    edits = fake.find(lambda c: c.method == "editMessageText" and c.params.get("message_id") == status_id)
    assert edits and edits[0].params["text"].startswith("Queued — ")
    fake.wait_for(lambda c: c.method == "deleteMessage" and c.params.get("message_id") == status_id, 10)
    record = bot.queue.jobs.get(job_id)
    assert record.request.conversation.status_message_id == str(status_id)
    assert record.request.conversation.reply_to == "11"


@pytest.fixture(scope="module")
def forum_result(bot: TelegramHandlers, fake: FakeTelegram) -> Call:
    """``/imagine@bot`` in a forum topic, and the photo the worker posted for it."""
    text = "/imagine@imaginebot_test_bot a blue square --engine dfgan --steps 2 --seed 3"
    fake.push_update(
        user_message(FORUM_CHAT, 1002, text, message_id=21, thread_id=TOPIC, chat_type="supergroup")
    )
    return reply_to(fake, "sendPhoto", FORUM_CHAT, 21)


def test_group_imagine_in_a_forum_topic_answers_in_that_topic(fake: FakeTelegram, forum_result: Call) -> None:
    status = reply_to(fake, "sendMessage", FORUM_CHAT, 21)
    assert status.params["message_thread_id"] == TOPIC
    assert status.params["text"].startswith("Queued")
    assert forum_result.params["message_thread_id"] == TOPIC
    assert_picture(forum_result)
    assert seed_of(forum_result) == 3 and "a blue square" in forum_result.params["caption"]


def test_reroll_button_queues_a_new_job_delivered_in_the_same_topic(
    bot: TelegramHandlers, fake: FakeTelegram, forum_result: Call
) -> None:
    old_id = job_id_of(forum_result)
    result_message = forum_result.result
    result_message["chat"]["is_forum"] = True
    fake.push_update(button_press(1003, f"rr:{old_id}", result_message, query_id="q-reroll"))

    fake.wait_for(
        lambda c: c.method == "answerCallbackQuery" and c.params.get("callback_query_id") == "q-reroll",
        WAIT_S,
    )
    status = reply_to(fake, "sendMessage", FORUM_CHAT, result_message["message_id"])
    assert status.params["message_thread_id"] == TOPIC
    photo = reply_to(fake, "sendPhoto", FORUM_CHAT, result_message["message_id"])
    assert photo.params["message_thread_id"] == TOPIC
    assert_picture(photo)
    new_id = job_id_of(photo)
    assert new_id != old_id
    new = bot.queue.jobs.get(new_id)
    old = bot.queue.jobs.get(old_id)
    assert new.request.prompt == old.request.prompt and new.request.engines == ["dfgan"]
    assert new.steps == 2 and new.request.user == "telegram:1003"
    assert seed_of(photo) == new.seed


def test_settings_button_answers_with_the_jobs_settings(fake: FakeTelegram, forum_result: Call) -> None:
    job_id = job_id_of(forum_result)
    fake.push_update(button_press(1002, f"st:{job_id}", forum_result.result, query_id="q-settings"))
    answer = fake.wait_for(
        lambda c: c.method == "answerCallbackQuery" and c.params.get("callback_query_id") == "q-settings",
        WAIT_S,
    )
    assert "seed 3" in answer.params["text"] and "steps 2" in answer.params["text"]


def test_bad_flag_gets_its_specific_error_and_nothing_is_queued(
    bot: TelegramHandlers, fake: FakeTelegram
) -> None:
    chat = user = 1004
    fake.push_update(user_message(chat, user, "a cat --colour red", message_id=41))
    error = reply_to(fake, "sendMessage", chat, 41)
    assert "Unknown option --colour" in error.params["text"]
    # The bot keeps working, and has nothing queued for this user.
    fake.push_update(user_message(chat, user, "/queue", message_id=42))
    answer = reply_to(fake, "sendMessage", chat, 42)
    assert answer.params["text"] == "You have no pictures waiting or in progress."
    assert bot.queue.user_jobs(f"telegram:{user}", unfinished_only=False) == []
    assert not fake.find(lambda c: c.params.get("chat_id") == chat and c.method != "sendMessage")


def test_retrain_is_for_admins_only(bot: TelegramHandlers, fake: FakeTelegram) -> None:
    fake.push_update(user_message(1005, 1005, "/retrain dataset:shapes epochs:2", message_id=51))
    assert reply_to(fake, "sendMessage", 1005, 51).params["text"] == "Only admins can retrain the model."
    fake.push_update(user_message(ADMIN_ID, ADMIN_ID, "/retrain dataset:../etc", message_id=52))
    assert "Unknown dataset" in reply_to(fake, "sendMessage", ADMIN_ID, 52).params["text"]
    fake.push_update(user_message(ADMIN_ID, ADMIN_ID, "/retrain dataset:shapes epochs:2", message_id=53))
    assert "training-queue release" in reply_to(fake, "sendMessage", ADMIN_ID, 53).params["text"]


def test_user_settings_become_the_defaults_of_their_prompts(
    bot: TelegramHandlers, fake: FakeTelegram
) -> None:
    chat = user = 1007
    fake.push_update(user_message(chat, user, "/settings --engine dfgan --steps 2", message_id=71))
    assert "--engine dfgan --steps 2" in reply_to(fake, "sendMessage", chat, 71).params["text"]
    fake.push_update(user_message(chat, user, "a green triangle --seed 5", message_id=72))
    photo = reply_to(fake, "sendPhoto", chat, 72)
    record = bot.queue.jobs.get(job_id_of(photo))
    assert record.request.engines == ["dfgan"] and record.steps == 2 and record.seed == 5
    fake.push_update(user_message(chat, user, "/cancel", message_id=73))
    assert "no pictures waiting" in reply_to(fake, "sendMessage", chat, 73).params["text"]


def test_retry_after_on_send_photo_delivers_once_after_the_wait(
    bot: TelegramHandlers, fake: FakeTelegram
) -> None:
    chat = user = 1006
    fake.fail_next(
        "sendPhoto",
        429,
        {
            "ok": False,
            "error_code": 429,
            "description": "Too Many Requests: retry after 2",
            "parameters": {"retry_after": 2},
        },
        chat_id=chat,
    )
    fake.push_update(
        user_message(chat, user, "a yellow star --engine dfgan --steps 2 --seed 9", message_id=61)
    )

    refused = fake.wait_for(lambda c: c.method == "sendPhoto" and c.params["chat_id"] == chat, WAIT_S)
    assert refused.status == 429
    photo = reply_to(fake, "sendPhoto", chat, 61)
    assert photo.at - refused.at >= 2.0
    assert_picture(photo)
    job_id = job_id_of(photo)
    deadline = time.monotonic() + 10
    while bot.queue.jobs.get(job_id).delivered_at is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert bot.queue.jobs.get(job_id).delivered_at is not None
    time.sleep(0.5)
    photos = fake.find(lambda c: c.method == "sendPhoto" and c.params["chat_id"] == chat)
    assert [c.status for c in photos] == [429, 200]
