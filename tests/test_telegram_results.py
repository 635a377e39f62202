"""Issue #15 on Telegram, end to end: python-telegram-bot polling the fake Bot API (which refuses photos
over Telegram's limits, as Telegram does), a real Redis, and the session's real Celery worker posting
through ``bots/telegram/send.py``.

A grid result carries core's buttons; U2 posts one picture; V1 queues a variation; ✏️ Remix asks for
the new prompt and the reply (or a reply to the result) becomes the remix; ``/show`` brings a job
back; the status message shows live previews; pictures over Telegram's photo limits still arrive.
"""

from __future__ import annotations

import asyncio
import io
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from telegram import Bot
from telegram.error import BadRequest

from bots.telegram.bot import build_application
from bots.telegram.handlers import TelegramHandlers
from bots.telegram.progress import PREVIEW_INTERVAL_S, ProgressTracker
from bots.telegram.send import send
from core.conversation.replies import REMIX_ASK_TEXT
from core.delivery import DeliveryContext
from core.embedded_redis import EmbeddedRedis
from core.jobs import (
    PREVIEW_KEY_PREFIX,
    Conversation,
    EngineResult,
    JobRecord,
    JobRequest,
    JobStatus,
    Progress,
)
from core.nsfw import NsfwPolicy, decision
from core.settings import Settings
from tests.helpers.bot_threads import TelegramBotThread
from tests.helpers.fake_platforms import running, worker_posting_to
from tests.helpers.fake_telegram import (
    PHOTO_BAD_DIMENSIONS,
    PHOTO_TOO_BIG,
    Call,
    FakeTelegram,
    button_press,
    user_message,
)
from tests.helpers.jobs import delivered_record
from tests.helpers.pictures import picture
from tests.helpers.settings import make_settings
from tests.helpers.waiting import eventually

TOKEN = "123:RESULTS"
WAIT_S = 90.0
CHAT = USER = 2001
PROMPT = "a red circle --engine dfgan --steps 2 --seed 7 --n 4"


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeTelegram]:
    with running(FakeTelegram(TOKEN)) as server:
        yield server


@pytest.fixture(scope="module")
def bot(
    redis_server: EmbeddedRedis, data_dir: Path, settings: Settings, celery_worker: Any, fake: FakeTelegram
) -> Iterator[TelegramHandlers]:
    """The bot polling the fake, and the session's worker posting to it; yields the bot's handlers."""
    with worker_posting_to(settings, telegram=fake):
        bot_settings = make_settings(
            redis_server.url,
            data_dir,
            telegram_token=TOKEN,
            telegram_api_base=fake.url,
            progress_interval_s=0.3,
        )
        application = build_application(bot_settings)
        runner = TelegramBotThread(application).start()
        yield application.bot_data["handlers"]
        runner.stop()


def answered(
    fake: FakeTelegram, method: str, chat_id: int, message_id: int, when: Callable[[Call], bool] = bool
) -> Call:
    """The first successful ``method`` call answering message ``message_id`` of ``chat_id`` (and
    matching ``when``)."""
    return fake.wait_for(
        lambda c: (
            c.method == method
            and c.ok
            and c.params.get("chat_id") == chat_id
            and c.reply_to == message_id
            and when(c)
        ),
        WAIT_S,
    )


def press(fake: FakeTelegram, user: int, data: str, message: dict[str, Any], query_id: str) -> Call:
    """Press the button ``data`` under ``message``; returns the bot's answer to the callback query."""
    fake.push_update(button_press(user, data, message, query_id=query_id))
    return fake.wait_for(
        lambda c: c.method == "answerCallbackQuery" and c.params.get("callback_query_id") == query_id, WAIT_S
    )


def job_of(call: Call) -> str:
    """The job whose buttons ``call`` carries (its 🔄 button)."""
    (job_id,) = [d[3:] for d in call.callback_data if d.startswith("rr:")]
    return job_id


def _new_result(call: Call, job_id: str) -> bool:
    """Whether ``call`` posts the result of another job than ``job_id``."""
    return any(d.startswith("rr:") and d != f"rr:{job_id}" for d in call.callback_data)


def pixels(data: bytes) -> tuple[tuple[int, int], bytes]:
    with Image.open(io.BytesIO(data)) as image:
        return image.size, image.convert("RGB").tobytes()


@pytest.fixture(scope="module")
def grid(bot: TelegramHandlers, fake: FakeTelegram) -> Call:
    """A four-picture DF-GAN job in a private chat, and the photo the worker posted for it."""
    fake.push_update(user_message(CHAT, USER, PROMPT, message_id=11))
    return answered(fake, "sendPhoto", CHAT, 11)


def test_a_grid_result_carries_cores_buttons(bot: TelegramHandlers, grid: Call) -> None:
    job = job_of(grid)
    rows = [
        [(b["text"], b["callback_data"]) for b in row]
        for row in grid.params["reply_markup"]["inline_keyboard"]
    ]
    assert rows == [
        [(f"U{n}", f"u:{job}:{n - 1}") for n in range(1, 5)],
        [(f"V{n}", f"v:{job}:{n - 1}") for n in range(1, 5)],
        [("🔄", f"rr:{job}"), ("ℹ️ Info", f"i:{job}"), ("✏️ Remix", f"rx:{job}:0")],
    ]
    record = bot.queue.jobs.get(job)
    assert record.request.count == 4 and len(record.results[0].image_keys) == 4


@pytest.fixture(scope="module")
def picked(bot: TelegramHandlers, fake: FakeTelegram, grid: Call) -> tuple[Call, int]:
    """U2 pressed under the grid: the picture posted, and how many jobs the user had before."""
    jobs_before = len(_jobs(bot))
    press(fake, USER, f"u:{job_of(grid)}:1", grid.result, "q-u2")
    return answered(fake, "sendPhoto", CHAT, grid.result["message_id"]), jobs_before


def test_u2_posts_that_one_picture_full_size_with_its_buttons(
    bot: TelegramHandlers, grid: Call, picked: tuple[Call, int]
) -> None:
    job = job_of(grid)
    record = bot.queue.jobs.get(job)
    picked, jobs_before = picked
    stored = bot.queue.images.get(record.results[0].image_keys[1])
    assert stored is not None
    assert pixels(picked.files["photo"]) == pixels(stored)  # picture 2 itself, not the grid
    assert pixels(picked.files["photo"]) != pixels(
        bot.queue.images.get(record.results[0].image_keys[0]) or b""
    )
    assert picked.params["caption"].startswith(f"Picture 2 of job {job[:8]}")
    assert picked.callback_data == [f"up:{job}:1:dfgan", f"v:{job}:1", f"rx:{job}:1"]
    assert len(_jobs(bot)) == jobs_before  # nothing drawn


def test_v1_queues_a_variation_of_picture_1(bot: TelegramHandlers, fake: FakeTelegram, grid: Call) -> None:
    job = job_of(grid)
    ack = press(fake, USER, f"v:{job}:0", grid.result, "q-v1")
    assert ack.params.get("text") == "Drawing a variation of picture 1…"
    photo = answered(fake, "sendPhoto", CHAT, grid.result["message_id"], lambda c: _new_result(c, job))
    variation = bot.queue.jobs.get(job_of(photo))
    source = variation.request.source
    assert source is not None and (source.job_id, source.index, source.kind) == (job, 0, "variation")
    assert variation.request.prompt == "a red circle"


def test_u1_of_a_two_engine_job_posts_each_engines_picture_and_one_set_of_buttons(
    bot: TelegramHandlers, fake: FakeTelegram
) -> None:
    chat = user = 2100
    fake.push_update(user_message(chat, user, "a blue square --engine dfgan,diffusion --steps 2 --n 2", 81))
    result = answered(fake, "sendPhoto", chat, 81, lambda c: bool(c.callback_data))
    job = job_of(result)
    press(fake, user, f"u:{job}:0", result.result, "q-u1-two")

    def both() -> list[Call] | None:
        found = _answers(fake, chat, result.result["message_id"])
        return found if len(found) >= 2 else None

    first, last = eventually(both, WAIT_S, "both pictures posted")
    assert not first.callback_data and first.params["caption"].startswith("DF-GAN")
    assert last.params["caption"] == f"Picture 1 of job {job[:8]}… — DF-GAN, Diffusion"
    assert last.callback_data == [
        f"up:{job}:0:dfgan",
        f"up:{job}:0:diffusion",
        f"v:{job}:0",
        f"rx:{job}:0",
    ]
    record = bot.queue.jobs.get(job)
    for call, engine_result in zip((first, last), record.results, strict=True):
        assert pixels(call.files["photo"]) == pixels(bot.queue.images.get(engine_result.image_keys[0]) or b"")


def _answers(fake: FakeTelegram, chat_id: int, message_id: int) -> list[Call]:
    """The photos posted as answers to message ``message_id`` of ``chat_id``, in order."""
    return fake.find(
        lambda c: (
            c.method == "sendPhoto"
            and c.ok
            and c.params.get("chat_id") == chat_id
            and c.reply_to == message_id
        )
    )


def test_upscale_under_a_picked_picture_queues_that_picture_on_the_upscaler(
    bot: TelegramHandlers, fake: FakeTelegram, grid: Call, picked: tuple[Call, int]
) -> None:
    job, message = job_of(grid), picked[0].result
    ack = press(fake, USER, f"up:{job}:1:dfgan", message, "q-up")
    assert ack.params.get("text") == "Upscaling picture 2…"
    status = answered(fake, "sendMessage", CHAT, message["message_id"])
    assert status.params["text"] == "Queued…"
    result = answered(fake, "sendPhoto", CHAT, message["message_id"], lambda c: bool(c.callback_data))
    upscale = delivered_record(bot.queue, job_of(result), WAIT_S)
    source = upscale.request.source
    assert upscale.request.engines == ["upscale"] and upscale.request.conversation.status_message_id == str(
        status.result["message_id"]
    )
    assert source is not None and (source.job_id, source.index, source.engine) == (job, 1, "dfgan")
    (drawn,) = [key for r in upscale.results for key in r.image_keys]
    original = bot.queue.jobs.get(job).results[0].image_keys[1]
    (width, height), _ = pixels(bot.queue.images.get(original) or b"")
    assert pixels(bot.queue.images.get(drawn) or b"")[0] == (2 * width, 2 * height)


def _jobs(bot: TelegramHandlers) -> list[JobRecord]:
    """The user's recent jobs, finished or not."""
    return [record for record, _ in bot.queue.user_jobs(f"telegram:{USER}", unfinished_only=False)]


def test_old_buttons_still_work(bot: TelegramHandlers, fake: FakeTelegram, grid: Call) -> None:
    job = job_of(grid)
    ack = press(fake, USER, f"vd:{job}:dfgan", grid.result, "q-old-vd")  # the old per-engine variation
    assert ack.params.get("text") == "Drawing a variation…"
    info = press(fake, USER, f"st:{job}", grid.result, "q-old-st")  # the old settings button
    assert "seed 7" in info.params["text"] and info.params["show_alert"] in (True, "true", "True")


def _remixed(bot: TelegramHandlers, fake: FakeTelegram, reply_id: int) -> JobRecord:
    """The job posted as the answer to message ``reply_id`` (the person's reply with the new prompt)."""
    photo = answered(fake, "sendPhoto", CHAT, reply_id)
    return bot.queue.jobs.get(job_of(photo))


def test_remix_asks_for_the_new_prompt_and_the_reply_becomes_the_remix(
    bot: TelegramHandlers, fake: FakeTelegram, grid: Call
) -> None:
    job = job_of(grid)
    press(fake, USER, f"rx:{job}:0", grid.result, "q-rx")
    question = answered(
        fake,
        "sendMessage",
        CHAT,
        grid.result["message_id"],
        lambda c: "force_reply" in c.params.get("reply_markup", {}),
    )
    assert question.params["text"] == REMIX_ASK_TEXT.format(n=1, prompt="a red circle")
    assert question.params["reply_markup"]["force_reply"] is True
    assert question.params["reply_markup"]["input_field_placeholder"] == "a red circle"

    fake.push_update(
        user_message(CHAT, USER, "a blue circle --bogus 3", message_id=30, reply_to=question.result)
    )
    refused = answered(fake, "sendMessage", CHAT, 30)
    assert "--bogus" in refused.params["text"]  # the specific error, and the question still stands:
    fake.push_update(user_message(CHAT, USER, "a blue circle", message_id=31, reply_to=question.result))
    remix = _remixed(bot, fake, 31)
    assert remix.request.prompt == "a blue circle"
    assert remix.request.source is not None and (remix.request.source.job_id, remix.request.source.kind) == (
        job,
        "remix",
    )


def test_a_text_reply_to_a_result_is_a_remix_of_that_picture(
    bot: TelegramHandlers, fake: FakeTelegram, grid: Call
) -> None:
    fake.push_update(user_message(CHAT, USER, "a green circle", message_id=41, reply_to=grid.result))
    remix = _remixed(bot, fake, 41)
    assert remix.request.prompt == "a green circle"
    assert remix.request.source is not None
    assert (remix.request.source.job_id, remix.request.source.index) == (job_of(grid), 0)


def test_show_brings_a_job_back_with_its_buttons_and_only_here_or_for_its_owner(
    bot: TelegramHandlers, fake: FakeTelegram, grid: Call
) -> None:
    job = job_of(grid)
    fake.push_update(user_message(CHAT, USER, f"/show {job}", message_id=51))
    shown = answered(fake, "sendPhoto", CHAT, 51)
    assert job in shown.params["caption"] and set(shown.callback_data) == set(grid.callback_data)
    assert pixels(shown.files["photo"]) == pixels(grid.files["photo"])
    # Someone else, in another chat: the same refusal as a forged button.
    fake.push_update(user_message(2999, 2999, f"/show {job}", message_id=52))
    refused = answered(fake, "sendMessage", 2999, 52)
    assert refused.params["text"] == "That button does not belong to this chat."
    fake.push_update(user_message(CHAT, USER, "/show nonsense", message_id=53))
    assert answered(fake, "sendMessage", CHAT, 53).params["text"].startswith("Give a job id")


def _noise_png(side: int) -> bytes:
    """A square of noise, ``side`` pixels, as a PNG that barely compresses."""
    out = io.BytesIO()
    Image.frombytes("RGB", (side, side), os.urandom(side * side * 3)).save(out, "PNG", compress_level=1)
    return out.getvalue()


def _done(bot: TelegramHandlers, chat_id: int, png: bytes, spoiler: bool = False) -> JobRecord:
    """A finished job in ``chat_id`` whose paired picture is ``png``."""
    conversation = Conversation(platform="telegram", chat_id=str(chat_id), reply_to="3")
    request = JobRequest(
        prompt="a long road", engines=["dfgan"], user="telegram:1", conversation=conversation
    )
    record = JobRecord(request=request, seed=1, steps=2, size=64, status=JobStatus.DONE)
    record.pair_key = bot.queue.images.put(record.id, "pair", png)
    nsfw = [decision(NsfwPolicy.SPOILER, 0)] if spoiler else []
    record.results = [EngineResult(engine="dfgan", version="v", seconds=0.1, image_keys=[], nsfw=nsfw)]
    bot.queue.jobs.save(record)
    return record


def test_pictures_over_telegrams_photo_limits_are_delivered_anyway(
    bot: TelegramHandlers, fake: FakeTelegram
) -> None:
    ctx = DeliveryContext(settings=bot.settings, images=bot.queue.images, history=bot.queue.history)
    wide, huge, heavy = picture("PNG", (4200, 200)), picture("PNG", (6000, 4100)), _noise_png(1900)
    assert len(heavy) > 10 * 1024 * 1024
    # The fake refuses them as photos, as Telegram does.
    for png, error in ((wide, PHOTO_BAD_DIMENSIONS), (huge, PHOTO_BAD_DIMENSIONS), (heavy, PHOTO_TOO_BIG)):
        assert (
            asyncio.run(_send_raw_photo(fake, 3001, png)) == error.removeprefix("Bad Request: ").capitalize()
        )

    for chat, png in ((3011, wide), (3012, huge)):  # too large or too narrow: the PNG as a document
        send(_done(bot, chat, png), ctx)
        document = answered(fake, "sendDocument", chat, 3)
        assert document.files["document"] == png  # metadata and all
        assert document.callback_data and document.params["caption"].startswith("“a long road”")
    send(_done(bot, 3013, heavy), ctx)  # too heavy: a JPEG photo
    photo = answered(fake, "sendPhoto", 3013, 3)
    assert len(photo.files["photo"]) <= 10 * 1024 * 1024
    assert pixels(photo.files["photo"])[0] == (1900, 1900)
    send(_done(bot, 3014, huge, spoiler=True), ctx)  # behind a spoiler: a photo, scaled down
    photo = answered(fake, "sendPhoto", 3014, 3)
    width, height = pixels(photo.files["photo"])[0]
    assert width + height <= 10_000 and photo.params["has_spoiler"] in (True, "true", "True")


async def _send_raw_photo(fake: FakeTelegram, chat_id: int, png: bytes) -> str:
    """Post ``png`` as a photo as it is, the way the bot must not; Telegram's (the fake's) refusal."""
    async with Bot(TOKEN, base_url=f"{fake.url}/bot") as raw:
        try:
            await raw.send_photo(chat_id, png)
        except BadRequest as exc:
            return exc.message
    return "posted"


def _preview(bot: TelegramHandlers, colour: str) -> str:
    """A preview PNG stored as the worker stores one; its key."""
    out = io.BytesIO()
    Image.new("RGB", (64, 64), colour).save(out, "PNG")
    key = f"{PREVIEW_KEY_PREFIX}{colour}-{time.monotonic_ns()}"
    bot.queue.redis.set(key, out.getvalue(), ex=60)
    return key


def test_the_status_shows_the_latest_preview_until_the_result_is_posted(
    bot: TelegramHandlers, fake: FakeTelegram
) -> None:
    chat = 3100
    conversation = Conversation(platform="telegram", chat_id=str(chat), thread_id="9", reply_to="4")
    request = JobRequest(prompt="a tree", engines=["diffusion"], user="telegram:1", conversation=conversation)
    record = JobRecord(request=request, seed=1, steps=8, size=64, status=JobStatus.RUNNING)
    record.progress = Progress(engine="diffusion", step=2, total=8, preview_key=_preview(bot, "red"))
    bot.queue.jobs.save(record)

    async def ticks() -> None:
        async with Bot(TOKEN, base_url=f"{fake.url}/bot") as client:
            tracker = ProgressTracker(bot.queue, interval_s=0.0)
            tracker.preview_interval_s = 0.0
            tracker.track(_NoLoop(), record.id, chat, 700, "Queued — position 1")  # type: ignore[arg-type]
            await tracker.tick(client)  # the first preview: a photo status message
            record.progress = Progress(engine="diffusion", step=6, total=8, preview_key=_preview(bot, "blue"))
            bot.queue.jobs.save(record)
            await tracker.tick(client)  # a newer one: its picture swapped
            await tracker.tick(client)  # nothing new: the text status catches up
            record.status, record.finished_at = JobStatus.DONE, time.time()
            bot.queue.jobs.save(record)
            await tracker.tick(client)  # done, not posted yet: the preview stays
            record.delivered_at = time.time()
            bot.queue.jobs.save(record)
            await tracker.tick(client)  # posted: the preview goes
            assert not tracker.jobs

    asyncio.run(ticks())
    preview = answered(fake, "sendPhoto", chat, 4)
    assert preview.params["message_thread_id"] == 9
    assert preview.params["caption"] == "Drawing — diffusion step 2/8"
    assert pixels(preview.files["photo"])[1][:3] == bytes((255, 0, 0))
    message_id = preview.result["message_id"]
    edits = fake.find(lambda c: c.method == "editMessageMedia" and c.params.get("message_id") == message_id)
    assert len(edits) == 1 and edits[0].ok
    media = edits[0].params["media"]
    assert media["type"] == "photo" and media["caption"] == "Drawing — diffusion step 6/8"
    swapped = edits[0].files[media["media"].removeprefix("attach://")]
    assert pixels(swapped)[1][:3] == bytes((0, 0, 255))
    texts = fake.find(lambda c: c.method == "editMessageText" and c.params.get("message_id") == 700)
    assert [c.params["text"] for c in texts] == ["Drawing — diffusion step 6/8"]
    deleted = fake.find(lambda c: c.method == "deleteMessage" and c.params.get("message_id") == message_id)
    assert len(deleted) == 1 and deleted[0].at > edits[0].at


class _NoLoop:
    """Just enough of an Application for ProgressTracker.track: the test ticks by hand."""

    running = False

    def create_task(self, coro: Any, name: str | None = None) -> None:
        coro.close()


@pytest.fixture
def preview_interval(bot: TelegramHandlers) -> Iterator[float]:
    """A shorter interval between two previews in one chat, for this test (restored after it)."""
    saved, bot.tracker.preview_interval_s = bot.tracker.preview_interval_s, 0.8
    yield bot.tracker.preview_interval_s
    bot.tracker.preview_interval_s = saved


def test_a_live_preview_is_shown_before_the_result(
    bot: TelegramHandlers, fake: FakeTelegram, preview_interval: float
) -> None:
    assert PREVIEW_INTERVAL_S >= 3.0  # the bot's own pace; this test runs faster
    chat = user = 3200
    fake.push_update(user_message(chat, user, "a green square --engine diffusion --steps 40 --seed 3", 61))
    result = answered(fake, "sendPhoto", chat, 61, lambda c: bool(c.callback_data))
    preview = answered(fake, "sendPhoto", chat, 61, lambda c: not c.callback_data)
    assert preview.at < result.at and preview.params["caption"].startswith("Drawing — diffusion step")
    with Image.open(io.BytesIO(preview.files["photo"])) as image:
        assert image.format == "PNG" and max(image.size) <= 256
    message_id = preview.result["message_id"]
    swaps = fake.find(lambda c: c.method == "editMessageMedia" and c.params.get("message_id") == message_id)
    assert all(
        c.ok and c.at < result.at for c in swaps
    )  # newer previews swapped in (a fast run may have none)
    # Each edit of this chat (status text or preview) at least the bot's interval after the one before.
    edits = fake.find(
        lambda c: c.method.startswith("edit") and c.params.get("chat_id") == chat and c.at < result.at
    )
    edits = sorted([preview, *edits], key=lambda c: c.at)
    assert all(b.at - a.at >= 0.25 for a, b in zip(edits, edits[1:], strict=False))
    pictures = sorted([preview, *swaps], key=lambda c: c.at)
    assert all(b.at - a.at >= 0.9 * preview_interval for a, b in zip(pictures, pictures[1:], strict=False))
    removed = fake.wait_for(
        lambda c: c.method == "deleteMessage" and c.params.get("message_id") == message_id, 30
    )
    assert removed.at > result.at
