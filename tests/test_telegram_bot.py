"""The Telegram bot end to end: python-telegram-bot polling a fake Bot API server, a real Redis, and the
session's real Celery worker delivering through ``bots/telegram/send.py`` to the same fake.

Every check is on what the fake received: the chat, the forum topic, the message replied to, the
uploaded picture, the caption and the buttons.
"""

from __future__ import annotations

import asyncio
import io
import os
import re
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from PIL import Image

from bots.telegram.bot import build_application, serve, webhook_options
from bots.telegram.buttons import result_keyboard
from bots.telegram.handlers import TelegramHandlers
from bots.telegram.progress import ProgressTracker
from bots.telegram.send import fit_photo, send
from core.delivery import DeliveryContext, DeliveryFailed, DeliveryRetry
from core.embedded_redis import EmbeddedRedis
from core.errors import InputError
from core.jobs import Conversation, EngineResult, JobRecord, JobRequest, JobStatus, Progress
from core.nsfw import NsfwPolicy, decision, nsfw_notice
from core.result_buttons import read_button
from core.settings import Settings
from core.training_client import TrainingClient
from tests.helpers.bot_threads import TelegramBotThread
from tests.helpers.fake_platforms import running, worker_posting_to
from tests.helpers.fake_telegram import Call, FakeTelegram, button_press, photo_message, user_message
from tests.helpers.pictures import picture
from tests.helpers.settings import make_settings

TOKEN = "123:TEST"
ADMIN_ID = 999
FORUM_CHAT = -1001234
TOPIC = 77
WAIT_S = 60.0


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeTelegram]:
    with running(FakeTelegram(TOKEN)) as server:
        yield server


@pytest.fixture(scope="module")
def worker_to_fake(settings: Settings, celery_worker: Any, fake: FakeTelegram) -> Iterator[None]:
    """The session's worker holds the bot token and posts to the fake (restored after this module)."""
    with worker_posting_to(settings, telegram=fake):
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
    runner = TelegramBotThread(application).start()
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
    assert f"job {job_id}" in photo.params["caption"]  # what /show takes
    assert set(photo.callback_data) == {f"v:{job_id}:0", f"rr:{job_id}", f"i:{job_id}", f"rx:{job_id}:0"}
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
    answer = reply_to(fake, "sendMessage", ADMIN_ID, 53).params["text"]
    assert answer.startswith("Queued training run ") and "DF-GAN on shapes, 2 epochs" in answer
    run_id = answer.split()[3].rstrip(":")
    run = TrainingClient(bot.settings).status(run_id)
    assert run.requested_by == f"telegram:{ADMIN_ID}" and run.conversation.reply_to == "53"


def test_user_settings_become_the_defaults_of_their_prompts(
    bot: TelegramHandlers, fake: FakeTelegram
) -> None:
    chat = user = 1007
    fake.push_update(user_message(chat, user, "/settings --engine dfgan --steps 2 --n 2", message_id=71))
    assert (
        "--engine dfgan --steps 2 --size 64 --n 2" in reply_to(fake, "sendMessage", chat, 71).params["text"]
    )
    fake.push_update(user_message(chat, user, "a green triangle --seed 5", message_id=72))
    photo = reply_to(fake, "sendPhoto", chat, 72)
    record = bot.queue.jobs.get(job_id_of(photo))
    assert record.request.engines == ["dfgan"] and record.steps == 2 and record.seed == 5
    assert record.request.count == 2
    # Both pictures arrive in one photo (a 2×1 grid, U1 and U2 under it), so a 429 can never split them.
    assert assert_picture(photo).width > 2 * 256
    assert [d for d in photo.callback_data if d.startswith("u:")] == [f"u:{record.id}:0", f"u:{record.id}:1"]
    assert (
        len(fake.find(lambda c: c.method in ("sendPhoto", "sendMediaGroup") and c.params["chat_id"] == chat))
        == 1
    )
    fake.push_update(user_message(chat, user, "/cancel", message_id=73))
    assert "no pictures waiting" in reply_to(fake, "sendMessage", chat, 73).params["text"]
    fake.push_update(user_message(chat, user, "/cancel ../../etc/passwd", message_id=74))
    assert reply_to(fake, "sendMessage", chat, 74).params["text"].startswith("No such job")


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


def test_button_for_a_job_of_another_chat_is_refused(
    bot: TelegramHandlers, fake: FakeTelegram, forum_result: Call
) -> None:
    # Clients can send any callback data; a job id from another chat must not post there.
    elsewhere = user_message(1008, 1008, "hi", message_id=81)["message"]
    fake.push_update(button_press(1008, f"rr:{job_id_of(forum_result)}", elsewhere, query_id="q-forged"))
    answer = fake.wait_for(
        lambda c: c.method == "answerCallbackQuery" and c.params.get("callback_query_id") == "q-forged",
        WAIT_S,
    )
    assert answer.params["text"] == "That button does not belong to this chat."
    assert answer.params["show_alert"] in (True, "true")
    assert not fake.find(
        lambda c: (
            c.method == "sendMessage" and c.params.get("chat_id") in (1008, FORUM_CHAT) and c.reply_to == 81
        )
    )


def _record(chat_id: int, status: JobStatus, error: str | None = None) -> JobRecord:
    conversation = Conversation(platform="telegram", chat_id=str(chat_id), thread_id="5", reply_to="3")
    request = JobRequest(prompt="a tree", engines=["dfgan"], user="telegram:1", conversation=conversation)
    return JobRecord(request=request, seed=1, steps=2, size=64, status=status, error=error)


def test_failed_job_is_answered_with_its_error_in_the_topic(
    bot: TelegramHandlers, fake: FakeTelegram
) -> None:
    ctx = DeliveryContext(settings=bot.settings, images=bot.queue.images, history=bot.queue.history)
    send(_record(1020, JobStatus.FAILED, error="the engine ran out of memory"), ctx)
    message = reply_to(fake, "sendMessage", 1020, 3)
    assert message.params["message_thread_id"] == 5
    assert "the engine ran out of memory" in message.params["text"]


def _flagged_result(bot: TelegramHandlers, chat_id: int, *policies: NsfwPolicy) -> JobRecord:
    """A finished job in ``chat_id`` with its paired picture stored and one flagged picture per policy."""
    record = _record(chat_id, JobStatus.DONE)
    out = io.BytesIO()
    Image.new("RGB", (64, 32), "gray").save(out, "PNG")
    record.pair_key = bot.queue.images.put(record.id, "pair", out.getvalue())
    flags = [decision(policy, i) for i, policy in enumerate(policies)]
    record.results = [EngineResult(engine="diffusion", version="v1", seconds=0.1, image_keys=[], nsfw=flags)]
    bot.queue.jobs.save(record)
    return record


def test_a_picture_kept_under_the_spoiler_rule_is_sent_with_has_spoiler_and_the_reason(
    bot: TelegramHandlers, fake: FakeTelegram
) -> None:
    ctx = DeliveryContext(settings=bot.settings, images=bot.queue.images, history=bot.queue.history)
    spoilered = _flagged_result(bot, 1040, NsfwPolicy.SPOILER, NsfwPolicy.WITHHOLD)
    send(spoilered, ctx)
    photo = reply_to(fake, "sendPhoto", 1040, 3)
    assert photo.params["has_spoiler"] in (True, "true", "True")
    assert_picture(photo)
    first, second = photo.params["caption"].split("\n")
    assert "“a tree”" in first and second == nsfw_notice(spoilered.results)
    assert "1 picture behind a spoiler" in second and "1 picture withheld" in second
    for chat, policy, said in ((1041, NsfwPolicy.WITHHOLD, "withheld"), (1042, NsfwPolicy.ALLOW, "shown")):
        send(_flagged_result(bot, chat, policy), ctx)
        photo = reply_to(fake, "sendPhoto", chat, 3)
        assert "has_spoiler" not in photo.params
        assert f"1 picture {said}: the safety checker flagged it" in photo.params["caption"]


@pytest.mark.parametrize(
    ("status", "description", "raised", "retry_after"),
    [
        (429, "Too Many Requests: retry after 2", DeliveryRetry, 2.0),
        (502, "Bad Gateway", DeliveryRetry, None),
        (403, "Forbidden: bot was blocked by the user", DeliveryFailed, None),
        (400, "Bad Request: message thread not found", DeliveryFailed, None),
    ],
)
def test_telegram_errors_map_to_retry_or_failure(
    bot: TelegramHandlers,
    fake: FakeTelegram,
    status: int,
    description: str,
    raised: type[Exception],
    retry_after: float | None,
) -> None:
    chat = 1030 + status
    body: dict[str, Any] = {"ok": False, "error_code": status, "description": description}
    if status == 429:
        body["parameters"] = {"retry_after": 2}
    fake.fail_next("sendMessage", status, body, chat_id=chat)
    ctx = DeliveryContext(settings=bot.settings, images=bot.queue.images, history=bot.queue.history)
    with pytest.raises(raised) as info:
        send(_record(chat, JobStatus.CANCELLED), ctx)
    if raised is DeliveryRetry:
        assert info.value.retry_after == retry_after


def test_oversized_pictures_are_reencoded_or_sent_as_documents() -> None:
    def png(width: int, height: int, noise: bool = False) -> bytes:
        out = io.BytesIO()
        if noise:
            image = Image.frombytes("RGB", (width, height), os.urandom(width * height * 3))
        else:
            image = Image.new("RGB", (width, height), (200, 30, 30))
        image.save(out, "PNG", compress_level=1)
        return out.getvalue()

    small = png(600, 300)
    assert fit_photo(small) == (small, "imaginebot.png", False)
    assert fit_photo(png(4200, 200))[2] is True  # ratio 21 > 20
    assert fit_photo(png(6000, 4100))[2] is True  # width + height > 10000
    heavy = png(1900, 1900, noise=True)
    assert len(heavy) > 10 * 1024 * 1024
    data, name, as_document = fit_photo(heavy)
    assert (name, as_document) == ("imaginebot.jpg", False) and len(data) <= 10 * 1024 * 1024
    assert Image.open(io.BytesIO(data)).format == "JPEG"
    # Only a photo can hide behind a spoiler: what would go as a document is scaled down instead.
    for shape in ((4200, 200), (6000, 4100)):
        data, name, as_document = fit_photo(png(*shape), photo_only=True)
        assert (name, as_document) == ("imaginebot.jpg", False)
        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size
        assert width + height <= 10_000 and max(width, height) <= 20 * min(width, height)


def test_buttons_fit_telegrams_callback_limit_and_forged_data_is_rejected() -> None:
    record = _record(1, JobStatus.DONE)
    record.request.engines = ["dfgan", "diffusion"]
    record.request.count = 4
    rows = [[(b.text, b.callback_data) for b in row] for row in result_keyboard(record).inline_keyboard]
    job = record.id
    assert rows == [
        [(f"U{n}", f"u:{job}:{n - 1}") for n in range(1, 5)],
        [(f"V{n}", f"v:{job}:{n - 1}") for n in range(1, 5)],
        [("🔄", f"rr:{job}"), ("ℹ️ Info", f"i:{job}"), ("✏️ Remix", f"rx:{job}:0")],
    ]
    assert all(len(str(data).encode()) <= 64 for row in rows for _, data in row)
    for forged in ("rr:../../etc", f"vd:{record.id}:shell", "xx:0123456789abcdef", "rr", ""):
        with pytest.raises(InputError):
            read_button(forged)


class _StubApp:
    """Just enough of an Application for ProgressTracker.track (its poll loop is not started here)."""

    running = False

    def create_task(self, coro: Any, name: str | None = None) -> None:
        coro.close()


class _StubBot:
    def __init__(self) -> None:
        self.edits: list[tuple[int, int, str]] = []

    async def edit_message_text(self, text: str, chat_id: int, message_id: int) -> None:
        self.edits.append((chat_id, message_id, text))


def test_progress_edits_at_most_one_per_chat_per_interval(bot: TelegramHandlers) -> None:
    queue = bot.queue
    tracker = ProgressTracker(queue, interval_s=60.0)
    records = {}
    for name, chat, status in (
        ("a", 1, JobStatus.RUNNING),
        ("b", 1, JobStatus.RUNNING),
        ("c", 2, JobStatus.DONE),
    ):
        record = _record(chat, status)
        record.progress = Progress(engine="dfgan", step=1, total=4)
        queue.jobs.save(record)
        records[name] = record
        tracker.track(_StubApp(), record.id, chat, 100 + len(records), "Queued — position 1")  # type: ignore[arg-type]
    stub = _StubBot()

    asyncio.run(tracker.tick(stub))  # type: ignore[arg-type]
    assert stub.edits == [(1, 101, "Drawing — dfgan step 1/4")]  # one edit in chat 1; c finished
    assert set(tracker.jobs) == {records["a"].id, records["b"].id}
    asyncio.run(tracker.tick(stub))  # type: ignore[arg-type]
    assert len(stub.edits) == 1  # chat 1 waits for the interval; a's text did not change
    tracker.next_edit[1] = 0.0
    asyncio.run(tracker.tick(stub))  # type: ignore[arg-type]
    assert stub.edits[1:] == [(1, 102, "Drawing — dfgan step 1/4")]


def test_text_messages_for_training_go_to_the_admins_topic(bot: TelegramHandlers, fake: FakeTelegram) -> None:
    from bots.telegram.send import send_text

    conversation = Conversation(platform="telegram", chat_id="1030", thread_id="9", reply_to="4")
    send_text(conversation, "Training run abc: step 10/20", bot.settings)
    message = reply_to(fake, "sendMessage", 1030, 4)
    assert message.params["message_thread_id"] == 9
    assert message.params["text"] == "Training run abc: step 10/20"


def test_retrain_cancel_from_chat(bot: TelegramHandlers, fake: FakeTelegram) -> None:
    fake.push_update(user_message(1005, 1005, "/retrain cancel", message_id=171))
    assert reply_to(fake, "sendMessage", 1005, 171).params["text"] == "Only admins can cancel training runs."
    fake.push_update(user_message(ADMIN_ID, ADMIN_ID, "/retrain dataset:shapes epochs:1", message_id=172))
    run_id = reply_to(fake, "sendMessage", ADMIN_ID, 172).params["text"].split()[3].rstrip(":")
    fake.push_update(user_message(ADMIN_ID, ADMIN_ID, "/retrain cancel", message_id=173))
    assert (
        reply_to(fake, "sendMessage", ADMIN_ID, 173)
        .params["text"]
        .startswith(f"Cancelled training run {run_id} ")
    )
    assert TrainingClient(bot.settings).status(run_id).status == "cancelled"
    for message_id, text, answer in [
        (174, f"/retrain cancel {run_id}", "That training run is already cancelled."),
        (175, f"/retrain cancel {'0' * 16}", f"No training run {'0' * 16} (it may have expired)."),
    ]:
        fake.push_update(user_message(ADMIN_ID, ADMIN_ID, text, message_id=message_id))
        assert reply_to(fake, "sendMessage", ADMIN_ID, message_id).params["text"] == answer
    fake.push_update(user_message(ADMIN_ID, ADMIN_ID, "/retrain cancel ../../etc", message_id=176))
    assert reply_to(fake, "sendMessage", ADMIN_ID, 176).params["text"].startswith("Usage: /retrain cancel")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_webhook_mode_takes_updates_posted_with_the_secret_token(
    redis_server: EmbeddedRedis, data_dir: Path, fake: FakeTelegram
) -> None:
    secret, port = "s3cret-Token_1", free_port()
    url = "https://bot.example.org/telegram/hook"
    hook_settings = make_settings(
        redis_server.url,
        data_dir,
        telegram_token=TOKEN,
        telegram_api_base=fake.url,
        telegram_webhook_url=url,
        telegram_webhook_port=port,
        telegram_webhook_secret=secret,
    )
    assert webhook_options(hook_settings)["url_path"] == "telegram/hook"
    application = build_application(hook_settings)
    loop = asyncio.new_event_loop()
    errors: list[BaseException] = []

    def main() -> None:
        asyncio.set_event_loop(loop)
        try:  # the same path as `imaginebot telegram`; no signal handlers off the main thread
            serve(application, hook_settings, stop_signals=None)
        except BaseException as exc:  # reported below
            errors.append(exc)

    thread = threading.Thread(target=main, name="telegram-webhook", daemon=True)
    thread.start()
    try:
        hook = fake.wait_for(lambda c: c.method == "setWebhook" and c.params.get("url") == url, 30)
        assert hook.params["secret_token"] == secret
        deadline = time.monotonic() + 30
        while not application.running and time.monotonic() < deadline and not errors:
            time.sleep(0.05)
        assert application.running and not errors, errors

        chat = user = 1031
        endpoint = f"http://127.0.0.1:{port}/telegram/hook"

        def post(message_id: int, headers: dict[str, str]) -> int:
            update = {"update_id": message_id, **user_message(chat, user, "a cat --colour red", message_id)}
            return requests.post(endpoint, json=update, headers=headers, timeout=10).status_code

        assert post(51, {"X-Telegram-Bot-Api-Secret-Token": "wrong"}) == 403
        assert post(52, {}) == 403
        assert post(53, {"X-Telegram-Bot-Api-Secret-Token": secret}) == 200
        error = reply_to(fake, "sendMessage", chat, 53)
        assert "Unknown option --colour" in error.params["text"]
        time.sleep(0.3)
        assert [c.reply_to for c in fake.find(lambda c: c.params.get("chat_id") == chat)] == [53]
    finally:
        deadline = time.monotonic() + 30
        while thread.is_alive() and not application.running and time.monotonic() < deadline:
            time.sleep(0.05)  # stop_running() only stops a running application
        if thread.is_alive():
            loop.call_soon_threadsafe(application.stop_running)
        thread.join(30)
    assert not thread.is_alive(), "webhook bot did not stop"
    assert not errors, errors


def test_training_pictures_go_to_the_admins_topic_as_photos(
    bot: TelegramHandlers, fake: FakeTelegram
) -> None:
    from bots.telegram.send import send_photo_text

    out = io.BytesIO()
    Image.new("RGB", (8, 8), "red").save(out, "PNG")
    conversation = Conversation(platform="telegram", chat_id="1041", thread_id="9", reply_to="5")
    send_photo_text(conversation, out.getvalue(), "Training run abc: old vs new", bot.settings)
    photo = reply_to(fake, "sendPhoto", 1041, 5)
    assert (
        photo.params["message_thread_id"] == 9 and photo.params["caption"] == "Training run abc: old vs new"
    )
    assert_picture(photo)


# --- image input, /models, /nsfw ------------------------------------------------------------------


def sizes(fake: FakeTelegram, data: bytes, width: int = 80, height: int = 60) -> list[dict[str, Any]]:
    """A photo as Telegram offers it: a small thumbnail, then the full size (``data``)."""
    return [fake.photo(picture("JPEG", (8, 6)), 8, 6), fake.photo(data, width, height)]


def stored_upload(bot: TelegramHandlers, key: str | None) -> Image.Image:
    assert key is not None and key.startswith("ib:upload:")
    png = bot.service.uploads.get(key)
    assert png is not None
    return Image.open(io.BytesIO(png))


def test_a_photo_with_a_caption_is_a_prompt_drawn_from_the_largest_size(
    bot: TelegramHandlers, fake: FakeTelegram
) -> None:
    chat = user = 1101
    photo = sizes(fake, picture())
    caption = "a green square --engine diffusion --steps 2 --strength 0.5 --seed 4"
    fake.push_update(photo_message(chat, user, caption, message_id=11, sizes=photo))
    assert reply_to(fake, "sendMessage", chat, 11).params["text"].startswith("Queued")
    result = reply_to(fake, "sendPhoto", chat, 11)
    assert_picture(result)
    record = bot.queue.jobs.get(job_id_of(result))
    assert stored_upload(bot, record.request.image_key).size == (80, 60)  # the full size, not the thumbnail
    assert fake.path_of(photo[1]) in fake.downloads and fake.path_of(photo[0]) not in fake.downloads
    assert record.request.strength == 0.5 and record.seed == 4
    [diffusion] = record.results
    assert diffusion.engine == "diffusion" and not diffusion.text_only
    assert record.request.nsfw == "withhold"  # the server's rule: nobody set one for this chat


def test_an_image_sent_as_a_file_with_a_caption_is_a_prompt_too(
    bot: TelegramHandlers, fake: FakeTelegram
) -> None:
    chat = user = 1103
    sent = {
        **fake.photo(picture("WEBP", (40, 30)), 40, 30),
        "mime_type": "image/webp",
        "file_name": "cat.webp",
    }
    fake.push_update(photo_message(chat, user, "a cat --engine dfgan --steps 1", 12, [sent]))
    record = bot.queue.jobs.get(job_id_of(reply_to(fake, "sendPhoto", chat, 12)))
    assert stored_upload(bot, record.request.image_key).size == (40, 30)


def test_in_a_group_a_photo_is_a_prompt_only_with_imagine_and_a_reply_to_a_photo_draws_from_it(
    bot: TelegramHandlers, fake: FakeTelegram
) -> None:
    group, user = -1001101, 1102
    options = "--engine dfgan --steps 1"
    plain = photo_message(group, user, "holiday", 21, sizes(fake, picture()), chat_type="supergroup")
    other_bot = photo_message(
        group,
        user,
        f"/imagine@another_bot a cat {options}",
        22,
        sizes(fake, picture()),
        chat_type="supergroup",
    )
    ours = photo_message(
        group,
        user,
        f"/imagine@imaginebot_test_bot a cat {options}",
        23,
        sizes(fake, picture("PNG", (50, 40)), 50, 40),
        chat_type="supergroup",
    )
    for update in (plain, other_bot, ours):
        fake.push_update(update)
    result = reply_to(fake, "sendPhoto", group, 23)
    assert stored_upload(bot, bot.queue.jobs.get(job_id_of(result)).request.image_key).size == (50, 40)
    photo = photo_message(group, user, None, 24, sizes(fake, picture("PNG", (30, 20)), 30, 20))["message"]
    fake.push_update(
        user_message(group, user, f"/imagine a dog {options}", 25, chat_type="supergroup", reply_to=photo)
    )
    answered = reply_to(fake, "sendPhoto", group, 25)
    record = bot.queue.jobs.get(job_id_of(answered))
    assert record.request.prompt == "a dog"
    assert stored_upload(bot, record.request.image_key).size == (30, 20)
    assert [r.text_only for r in record.results] == [True]  # DF-GAN cannot start from a picture
    assert not fake.find(lambda c: c.reply_to in (21, 22) and c.params.get("chat_id") == group)
    assert len(bot.queue.user_jobs(f"telegram:{user}", unfinished_only=False)) == 2


@pytest.mark.parametrize(
    ("chat", "data", "announced", "message"),
    [
        (
            1111,
            b"just some text",
            None,
            "That file is not an image I can read. Send a PNG, JPEG or WebP picture.",
        ),
        (1112, picture("GIF"), None, "GIF images are not accepted. Send a PNG, JPEG or WebP picture."),
        (1113, picture(), 11 * 1024 * 1024, "The image is 11.0 MB; the limit is 10.0 MB."),
        (1114, None, None, "I could not fetch the image from the chat service; please send it again."),
    ],
)
def test_a_bad_picture_gets_its_specific_message_and_nothing_is_queued(
    bot: TelegramHandlers,
    fake: FakeTelegram,
    chat: int,
    data: bytes | None,
    announced: int | None,
    message: str,
) -> None:
    user = chat
    size = fake.photo(data or picture(), 80, 60, file_size=announced)
    path = fake.path_of(size)
    if data is None:
        fake.files.pop(path)  # the file URL answers 404
    fake.push_update(photo_message(chat, user, "a cat --engine dfgan", 31, [size]))
    assert reply_to(fake, "sendMessage", chat, 31).params["text"] == message
    if announced is not None:
        assert path not in fake.downloads  # refused before downloading
    assert bot.queue.user_jobs(f"telegram:{user}", unfinished_only=False) == []


def test_models_for_everyone_and_nsfw_for_admins_whose_rule_goes_into_the_chats_jobs(
    bot: TelegramHandlers, fake: FakeTelegram
) -> None:
    group, user = -1001120, 1120
    fake.push_update(user_message(group, user, "/models", 41, chat_type="supergroup"))
    listed = reply_to(fake, "sendMessage", group, 41).params["text"]
    assert listed.startswith("Models (--model NAME):\n• default") and "LoRAs (--lora NAME" in listed
    fake.push_update(user_message(group, user, "/nsfw allow", 42, chat_type="supergroup"))
    assert (
        reply_to(fake, "sendMessage", group, 42).params["text"]
        == "Only admins can set a channel's NSFW rule."
    )
    fake.push_update(user_message(group, ADMIN_ID, "/nsfw SPOILER", 43, chat_type="supergroup"))
    assert reply_to(fake, "sendMessage", group, 43).params["text"] == (
        "This channel's NSFW rule is now spoiler: flagged pictures are posted behind a spoiler."
    )
    fake.push_update(user_message(group, ADMIN_ID, "/nsfw sometimes", 44, chat_type="supergroup"))
    assert "is not an NSFW rule" in reply_to(fake, "sendMessage", group, 44).params["text"]
    fake.push_update(
        user_message(group, user, "/imagine a cat --engine dfgan --steps 1", 45, chat_type="supergroup")
    )
    record = bot.queue.jobs.get(job_id_of(reply_to(fake, "sendPhoto", group, 45)))
    assert record.request.nsfw == "spoiler"
    fake.push_update(user_message(group, ADMIN_ID, "/nsfw default", 46, chat_type="supergroup"))
    assert reply_to(fake, "sendMessage", group, 46).params["text"].startswith("This channel now follows")
