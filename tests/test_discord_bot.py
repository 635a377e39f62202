"""The Discord front-end against a fake Discord on 127.0.0.1 (tests/helpers/fake_discord.py).

Delivery tests call ``bots.discord.send`` directly and through the session's real Celery worker; the
bot tests run the real discord.py client (gateway + REST) in a thread against the same fake.
"""

from __future__ import annotations

import functools
import io
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from PIL import Image

from bots.discord import send as discord_send
from bots.discord.bot import ImagineBot, build_client, run
from core.delivery import DeliveryContext, DeliveryFailed, DeliveryRetry
from core.job_client import QueueClient
from core.jobs import Conversation, EngineResult, JobRecord, JobRequest, JobStatus
from core.nsfw import NsfwPolicy, decision, nsfw_notice
from core.settings import Settings
from core.training_client import TrainingClient
from core.uploads import UploadStore
from tests.helpers.bot_threads import DiscordBotThread
from tests.helpers.fake_discord import APP_ID, Call, FakeDiscord, snowflake
from tests.helpers.fake_platforms import running
from tests.helpers.pictures import picture, truncated_png
from tests.helpers.settings import make_settings

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
BOT_TOKEN = "fake-bot-token"


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeDiscord]:
    """The fake Discord for this module."""
    with running(FakeDiscord()) as server:
        yield server


@pytest.fixture(scope="module")
def discord_settings(settings: Settings, data_dir: Path, fake: FakeDiscord) -> Settings:
    """The session's settings pointed at the fake Discord."""
    return make_settings(
        settings.redis_url or "",
        data_dir,
        discord_api_base=fake.api_base,
        discord_token=BOT_TOKEN,
        admin_ids="discord:424242",
        progress_interval_s=0.2,
    )


@pytest.fixture(scope="module")
def worker_to_fake(celery_app, celery_worker, discord_settings: Settings) -> Iterator[None]:  # noqa: ANN001
    """Point the session worker's delivery at the fake Discord for this module, then restore it."""
    from worker.runtime import runtime_for

    rt = runtime_for(celery_app)
    saved = rt.settings
    rt.settings = saved.model_copy(
        update={"discord_api_base": discord_settings.discord_api_base, "discord_token": BOT_TOKEN}
    )
    yield
    rt.settings = saved


def png_bytes(color: str = "red") -> bytes:
    """A small valid PNG."""
    out = io.BytesIO()
    Image.new("RGB", (8, 4), color).save(out, format="PNG")
    return out.getvalue()


def assert_png(data: bytes) -> None:
    """``data`` is a PNG that Pillow can decode."""
    assert data.startswith(PNG_MAGIC)
    with Image.open(io.BytesIO(data)) as image:
        image.load()
        assert image.width > 0 and image.height > 0


def discord_record(
    queue: QueueClient,
    status: JobStatus = JobStatus.DONE,
    token: str | None = "itok-direct",
    age_s: float = 0.0,
    user_id: str = "555",
    thread_id: str | None = None,
) -> JobRecord:
    """A finished Discord job stored in Redis (with its paired PNG when done)."""
    request = JobRequest(
        prompt="a red circle",
        engines=["dfgan"],
        steps=2,
        user=f"discord:{user_id}",
        conversation=Conversation(
            platform="discord",
            chat_id="777",
            thread_id=thread_id,
            interaction_token=token,
            application_id=APP_ID if token else None,
        ),
    )
    record = JobRecord(request=request, seed=7, steps=2, size=64, status=status)
    record.created_at -= age_s
    if status == JobStatus.DONE:
        record.pair_key = queue.images.put(record.id, "pair", png_bytes())
        record.results = [EngineResult(engine="dfgan", version="v1", seconds=0.1, image_keys=[])]
    elif status == JobStatus.FAILED:
        record.error = "the engine ran out of memory"
    queue.jobs.save(record)
    return record


@pytest.fixture
def queue(discord_settings: Settings, clean_redis: redis.Redis) -> Iterator[QueueClient]:
    """A queue client on the session's Redis."""
    client = QueueClient(discord_settings)
    yield client
    client.redis.close()


def old_buttons(job_id: str) -> list[dict]:
    """The action row under a result posted before the U-n / V-n buttons: ``ib:<action>:<job>``."""
    labels = {"rr": "Reroll", "vd": "DF-GAN variation", "vf": "Diffusion variation", "info": "Show settings"}
    row = [{"type": 2, "style": 2, "label": v, "custom_id": f"ib:{k}:{job_id}"} for k, v in labels.items()]
    return [{"type": 1, "components": row}]


def context(settings: Settings, queue: QueueClient) -> DeliveryContext:
    """What the deliver task hands a sender."""
    return DeliveryContext(settings=settings, images=queue.images, history=queue.history)


# --- send.py against the fake REST API ---------------------------------------------------------


def test_result_goes_to_the_interaction_follow_up_with_png_and_buttons(
    fake: FakeDiscord, discord_settings: Settings, queue: QueueClient
) -> None:
    record = discord_record(queue, token="itok-followup")
    discord_send.send(record, context(discord_settings, queue))
    [call] = fake.calls_to("POST", f"/webhooks/{APP_ID}/itok-followup")
    assert_png(call.files["files[0]"])
    assert "a red circle" in call.json["content"] and "seed 7" in call.json["content"]
    assert f"job {record.id}" in call.json["content"]  # what /show takes
    assert call.json["attachments"][0]["id"] == 0
    ids = [b["custom_id"] for row in call.json["components"] for b in row["components"]]
    assert f"rr:{record.id}" in ids and f"i:{record.id}" in ids
    assert all("circle" not in i for i in ids)
    assert "Authorization" not in call.headers  # webhooks are authorised by their token


def test_old_job_falls_back_to_a_channel_message_mentioning_the_user(
    fake: FakeDiscord, discord_settings: Settings, queue: QueueClient
) -> None:
    record = discord_record(queue, token="itok-old", age_s=15 * 60, thread_id="888")
    discord_send.send(record, context(discord_settings, queue))
    assert not fake.calls_to("POST", "/webhooks/" + APP_ID + "/itok-old")
    [call] = [c for c in fake.calls_to("POST", "/channels/888/messages")]
    assert call.headers["Authorization"] == f"Bot {BOT_TOKEN}"
    assert call.json["content"].startswith("<@555> ")
    assert call.json["allowed_mentions"] == {"users": ["555"]}
    assert_png(call.files["files[0]"])


def test_expired_token_404_falls_back_to_the_channel(
    fake: FakeDiscord, discord_settings: Settings, queue: QueueClient
) -> None:
    fake.expired_tokens.add("itok-gone")
    record = discord_record(queue, token="itok-gone", user_id="556")
    discord_send.send(record, context(discord_settings, queue))
    assert [c.status for c in fake.calls_to("POST", f"/webhooks/{APP_ID}/itok-gone")] == [404]
    posts = [c for c in fake.calls_to("POST", "/channels/777/messages") if "<@556>" in c.json["content"]]
    assert len(posts) == 1


def test_rate_limit_raises_retry_with_discords_wait(
    fake: FakeDiscord, discord_settings: Settings, queue: QueueClient
) -> None:
    fake.rate_limit_followups = 1
    record = discord_record(queue, token="itok-429")
    with pytest.raises(DeliveryRetry) as info:
        discord_send.send(record, context(discord_settings, queue))
    assert info.value.retry_after == 1.5
    fake.rate_limit_followups, fake.rate_limit_header_only = 1, True
    try:
        with pytest.raises(DeliveryRetry) as info:
            discord_send.send(record, context(discord_settings, queue))
    finally:
        fake.rate_limit_header_only = False
    assert info.value.retry_after == 2.0  # from the Retry-After header


def test_unreachable_discord_is_retried_and_refusals_are_final(
    discord_settings: Settings, queue: QueueClient, data_dir: Path
) -> None:
    closed = make_settings(
        discord_settings.redis_url or "", data_dir, discord_api_base="http://127.0.0.1:9/api/v10"
    )
    record = discord_record(queue, token="itok-x")
    with pytest.raises(DeliveryRetry) as info:
        discord_send.send(record, context(closed, queue))
    assert info.value.retry_after is None
    # No interaction token and no bot token: nowhere to post.
    tokenless = discord_record(queue, token=None)
    with pytest.raises(DeliveryFailed):
        discord_send.send(tokenless, context(closed, queue))


def test_failed_job_is_reported_as_text(
    fake: FakeDiscord, discord_settings: Settings, queue: QueueClient
) -> None:
    record = discord_record(queue, status=JobStatus.FAILED, token="itok-failed")
    discord_send.send(record, context(discord_settings, queue))
    [call] = fake.calls_to("POST", f"/webhooks/{APP_ID}/itok-failed")
    assert "ran out of memory" in call.json["content"] and not call.files


def flagged(record: JobRecord, queue: QueueClient, *actions: str) -> JobRecord:
    """``record`` with one flagged picture per action (``withheld``, ``spoiler``, ``allowed``)."""
    record.results[0].nsfw = [decision(NsfwPolicy(POLICY_OF[a]), i) for i, a in enumerate(actions)]
    queue.jobs.save(record)
    return record


POLICY_OF = {"withheld": "withhold", "spoiler": "spoiler", "allowed": "allow"}


def test_a_picture_kept_under_the_spoiler_rule_is_posted_as_a_spoiler_with_the_reason(
    fake: FakeDiscord, discord_settings: Settings, queue: QueueClient
) -> None:
    record = flagged(discord_record(queue, token="itok-spoiler"), queue, "spoiler", "withheld")
    discord_send.send(record, context(discord_settings, queue))
    [call] = fake.calls_to("POST", f"/webhooks/{APP_ID}/itok-spoiler")
    assert call.json["attachments"][0]["filename"] == f"SPOILER_imaginebot-{record.id}.png"
    assert_png(call.files["files[0]"])
    content = call.json["content"]
    assert "“a red circle”" in content.splitlines()[0]
    assert content.splitlines()[1] == nsfw_notice(record.results)
    assert "1 picture behind a spoiler" in content and "1 picture withheld" in content
    # The channel fallback (expired token) hides it too.
    old = flagged(
        discord_record(queue, token="itok-spoiler-old", age_s=15 * 60, user_id="558"), queue, "spoiler"
    )
    discord_send.send(old, context(discord_settings, queue))
    [post] = [c for c in fake.calls_to("POST", "/channels/777/messages") if "<@558>" in c.json["content"]]
    assert post.json["attachments"][0]["filename"].startswith("SPOILER_")


def test_withheld_or_allowed_pictures_are_not_spoilered_and_say_why(
    fake: FakeDiscord, discord_settings: Settings, queue: QueueClient
) -> None:
    withheld = flagged(discord_record(queue, token="itok-withheld"), queue, "withheld")
    allowed = flagged(discord_record(queue, token="itok-allowed"), queue, "allowed")
    plain = discord_record(queue, token="itok-unflagged")
    for record in (withheld, allowed, plain):
        discord_send.send(record, context(discord_settings, queue))
    posts = {
        r.id: fake.calls_to("POST", f"/webhooks/{APP_ID}/{r.request.conversation.interaction_token}")[0]
        for r in (withheld, allowed, plain)
    }
    for record, post in ((r, posts[r.id]) for r in (withheld, allowed, plain)):
        assert post.json["attachments"][0]["filename"] == f"imaginebot-{record.id}.png"
    assert "1 picture withheld: the safety checker flagged it" in posts[withheld.id].json["content"]
    assert "1 picture shown: the safety checker flagged it" in posts[allowed.id].json["content"]
    assert "\n" not in posts[plain.id].json["content"]


def threads_started_from(fake: FakeDiscord, post: Call) -> list[Call]:
    """Thread creations on the message that ``post`` created."""
    return fake.calls_to("POST", f"/channels/777/messages/{post.response['id']}/threads")


def test_thread_per_job_starts_a_thread_named_after_the_prompt(
    fake: FakeDiscord, discord_settings: Settings, queue: QueueClient
) -> None:
    threaded = discord_settings.model_copy(update={"discord_thread_per_job": True})
    record = discord_record(queue, token="itok-thread")
    discord_send.send(record, context(threaded, queue))
    [post] = fake.calls_to("POST", f"/webhooks/{APP_ID}/itok-thread")
    [thread] = threads_started_from(fake, post)
    assert thread.status == 201
    assert thread.json == {"name": "a red circle", "auto_archive_duration": 1440}
    assert thread.headers["Authorization"] == f"Bot {BOT_TOKEN}"
    # The channel fallback (expired token) gets its thread too; a long prompt is cut to 100 chars.
    old = discord_record(queue, token="itok-thread-old", age_s=15 * 60, user_id="557")
    old.request.prompt = "a very long prompt " * 10
    queue.jobs.save(old)
    discord_send.send(old, context(threaded, queue))
    [post] = [
        c
        for c in fake.calls_to("POST", "/channels/777/messages")
        if "<@557>" in (c.json or {}).get("content", "")
    ]
    [thread] = threads_started_from(fake, post)
    assert len(thread.json["name"]) <= 100 and thread.json["name"].startswith("a very long prompt a very")


def test_refused_thread_still_delivers_once_without_retry(
    fake: FakeDiscord, discord_settings: Settings, queue: QueueClient
) -> None:
    threaded = discord_settings.model_copy(update={"discord_thread_per_job": True})
    record = discord_record(queue, token="itok-no-thread")
    fake.refuse_threads = 403
    try:
        discord_send.send(record, context(threaded, queue))  # no DeliveryRetry / DeliveryFailed
    finally:
        fake.refuse_threads = None
    [post] = fake.calls_to("POST", f"/webhooks/{APP_ID}/itok-no-thread")
    assert post.status == 200
    assert_png(post.files["files[0]"])
    assert [c.status for c in threads_started_from(fake, post)] == [403]


def test_no_thread_when_disabled_or_already_in_a_thread(
    fake: FakeDiscord, discord_settings: Settings, queue: QueueClient
) -> None:
    assert discord_settings.discord_thread_per_job is False
    record = discord_record(queue, token="itok-plain")
    discord_send.send(record, context(discord_settings, queue))
    [post] = fake.calls_to("POST", f"/webhooks/{APP_ID}/itok-plain")
    threaded = discord_settings.model_copy(update={"discord_thread_per_job": True})
    in_thread = discord_record(queue, token="itok-in-thread", thread_id="889")
    discord_send.send(in_thread, context(threaded, queue))
    [post_in_thread] = fake.calls_to("POST", f"/webhooks/{APP_ID}/itok-in-thread")
    assert not threads_started_from(fake, post) and not threads_started_from(fake, post_in_thread)
    assert not [
        c
        for c in fake.calls_to("POST", "/channels/")
        if c.path.endswith("/threads")
        and c.path.split("/")[4] in (post.response["id"], post_in_thread.response["id"])
    ]


# --- through the real deliver task ---------------------------------------------------------------


def test_worker_delivers_once_after_a_429(
    fake: FakeDiscord, discord_settings: Settings, queue: QueueClient, worker_to_fake: None
) -> None:
    token = "itok-" + uuid.uuid4().hex[:8]
    request = JobRequest(
        prompt="a blue square",
        engines=["dfgan"],
        steps=2,
        user="discord:600",
        conversation=Conversation(
            platform="discord", chat_id=snowflake(), interaction_token=token, application_id=APP_ID
        ),
    )
    fake.rate_limit_followups = 1
    record = queue.submit(request)
    done = queue.wait(record.id, timeout_s=60)
    assert done.status == JobStatus.DONE
    posts = fake.calls_to("POST", f"/webhooks/{APP_ID}/{token}")
    assert [c.status for c in posts] == [429, 200]
    assert posts[1].at - posts[0].at >= 1.4  # waited for Discord's retry_after
    assert_png(posts[1].files["files[0]"])
    time.sleep(0.5)
    assert len(fake.calls_to("POST", f"/webhooks/{APP_ID}/{token}")) == 2  # never posted twice


# --- the real discord.py client on the fake gateway ---------------------------------------------


@pytest.fixture(scope="module")
def bot(fake: FakeDiscord, discord_settings: Settings, worker_to_fake: None) -> Iterator[ImagineBot]:
    """The bot connected to the fake gateway, with the session worker delivering to the fake."""
    client = build_client(discord_settings)
    runner = DiscordBotThread(client).start()
    try:
        fake.wait_for(lambda: runner.error or client.is_ready(), timeout_s=30, what="the bot to be ready")
        assert runner.error is None, runner.error
        yield client
    finally:
        runner.stop()


def new_user() -> str:
    """A fresh Discord user id (so limits and preferences start empty)."""
    return str(700_000 + int(uuid.uuid4().int % 100_000))


def callback_of(fake: FakeDiscord, interaction: dict) -> dict:
    """Wait for the interaction's initial response (POST .../callback) and return its JSON."""
    path = f"/interactions/{interaction['id']}/{interaction['token']}/callback"
    [call] = fake.wait_for(lambda: fake.calls_to("POST", path), timeout_s=10, what=path)
    return call.json


def delivery_of(fake: FakeDiscord, interaction: dict, timeout_s: float = 60.0) -> Call:
    """Wait for the result follow-up on the interaction's webhook."""
    path = f"/webhooks/{APP_ID}/{interaction['token']}"
    posts = fake.wait_for(
        lambda: [c for c in fake.calls_to("POST", path) if c.status == 200], timeout_s=timeout_s, what=path
    )
    return posts[0]


def test_bot_syncs_its_slash_commands(fake: FakeDiscord, bot: ImagineBot) -> None:
    [sync] = fake.calls_to("PUT", f"/applications/{APP_ID}/commands")
    names = {c["name"] for c in sync.json}
    assert {"imagine", "queue", "cancel", "settings", "retrain", "model", "models", "nsfw"} <= names
    imagine = next(c for c in sync.json if c["name"] == "imagine")
    assert [o["name"] for o in imagine["options"]][:1] == ["prompt"]
    options = {o["name"]: o["type"] for o in imagine["options"]}
    assert options["image"] == 11 and options["strength"] == 10  # an attachment, a number
    assert options["model"] == options["lora"] == options["ar"] == 3
    settings = next(c for c in sync.json if c["name"] == "settings")
    assert {o["name"]: o["type"] for o in settings["options"]}["ar"] == 3


def test_imagine_defers_answers_with_position_reports_progress_and_delivers_png(
    fake: FakeDiscord, bot: ImagineBot, queue: QueueClient
) -> None:
    user, channel = new_user(), snowflake()
    sent = time.monotonic()
    interaction = fake.slash_command(
        "imagine", {"prompt": "a red circle", "engine": "dfgan", "steps": 2, "seed": 5}, user, channel
    )
    assert callback_of(fake, interaction)["type"] == 5  # deferred, "thinking"
    callback_at = fake.calls_to("POST", f"/interactions/{interaction['id']}")[0].at
    assert callback_at - sent < 3.0
    original = f"/webhooks/{APP_ID}/{interaction['token']}/messages/@original"
    edits = fake.wait_for(lambda: fake.calls_to("PATCH", original), timeout_s=10, what="position answer")
    assert edits[0].json["content"].startswith("Queued “a red circle” (dfgan, seed 5), position ")

    delivered = delivery_of(fake, interaction)
    assert_png(delivered.files["files[0]"])
    assert "“a red circle”" in delivered.json["content"] and "seed 5" in delivered.json["content"]
    # The progress editor ends on the finished state.
    fake.wait_for(
        lambda: fake.calls_to("PATCH", original)[-1].json["content"].startswith("Done"),
        timeout_s=10,
        what="the final progress edit",
    )
    progress = fake.calls_to("PATCH", original)[1:]
    gaps = [b.at - a.at for a, b in zip(progress, progress[1:], strict=False)]
    assert all(gap >= 0.9 * bot.settings.progress_interval_s for gap in gaps)  # at most one edit per interval
    [(record, _)] = queue.user_jobs(f"discord:{user}", unfinished_only=False)
    conv = record.request.conversation
    assert (conv.chat_id, conv.thread_id, conv.application_id) == (channel, None, APP_ID)
    assert conv.interaction_token == interaction["token"] and record.steps == 2


def test_imagine_in_a_thread_keeps_the_thread(fake: FakeDiscord, bot: ImagineBot, queue: QueueClient) -> None:
    user, parent, thread = new_user(), snowflake(), snowflake()
    interaction = fake.slash_command(
        "imagine",
        {"prompt": "a green star", "engine": "dfgan", "steps": 2},
        user,
        thread,
        thread_parent_id=parent,
    )
    assert_png(delivery_of(fake, interaction).files["files[0]"])
    [(record, _)] = queue.user_jobs(f"discord:{user}", unfinished_only=False)
    assert (record.request.conversation.chat_id, record.request.conversation.thread_id) == (parent, thread)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"steps": 0}, "steps must be between 1 and 100."),
        ({"engine": "dalle"}, "'dalle' is not an engine. Enabled engines: dfgan, diffusion."),
        ({"count": 9}, "count must be between 1 and 4."),
        ({"prompt": "   "}, "Your prompt is empty."),
        ({"strength": 0.5}, "strength needs a picture to start from: attach an image."),
        ({"model": "nope", "engine": "diffusion"}, "There is no model called 'nope'. Models:\n• default"),
        ({"lora": "../x"}, "'../x' is not a LoRA name; use lora NAME or NAME:WEIGHT."),
        ({"lora": "ink:much"}, "The LoRA weight in 'ink:much' is not a number."),
        ({"lora": "ink", "engine": "diffusion"}, "There is no LoRA called 'ink'."),
        ({"ar": "9:1"}, "--ar 9:1 is too wide: ratios from 1:4 (tall) to 4:1 (wide) are allowed."),
        ({"ar": "wide"}, "--ar must be two whole numbers as width:height"),
    ],
)
def test_bad_option_gets_an_ephemeral_specific_error_and_nothing_is_queued(
    fake: FakeDiscord, bot: ImagineBot, queue: QueueClient, options: dict, message: str
) -> None:
    user = new_user()
    interaction = fake.slash_command("imagine", {"prompt": "a red circle", **options}, user, snowflake())
    answer = callback_of(fake, interaction)
    assert answer["type"] == 4 and answer["data"]["flags"] == 64
    assert answer["data"]["content"].startswith(message)
    time.sleep(0.3)
    assert queue.user_jobs(f"discord:{user}", unfinished_only=False) == []
    assert queue.redis.zcard("ib:pending") == 0


def test_retrain_is_refused_to_non_admins_and_checks_the_dataset(fake: FakeDiscord, bot: ImagineBot) -> None:
    refused = callback_of(fake, fake.slash_command("retrain", {"dataset": "shapes"}, new_user(), snowflake()))
    assert refused["type"] == 4
    assert refused["data"]["content"] == "Only admins can retrain the model."
    assert refused["data"]["flags"] == 64
    unknown = callback_of(fake, fake.slash_command("retrain", {"dataset": "../etc"}, "424242", snowflake()))
    assert unknown["data"]["content"].startswith("Unknown dataset '../etc'. Known datasets: shapes, emoji.")
    accepted = callback_of(fake, fake.slash_command("retrain", {"dataset": "shapes"}, "424242", snowflake()))
    assert accepted["data"]["content"].startswith("Queued training run ") and accepted["data"]["flags"] == 64
    run_id = accepted["data"]["content"].split()[3].rstrip(":")
    assert TrainingClient(bot.settings).status(run_id).requested_by == "discord:424242"
    model = callback_of(fake, fake.slash_command("model", {}, new_user(), snowflake()))
    assert model["data"]["content"].startswith("Only admins") and model["data"]["flags"] == 64


def test_retrain_options_are_taken_as_given_never_re_read_as_text(fake: FakeDiscord, bot: ImagineBot) -> None:
    # An option holding "name:value" words stays one value: it cannot set another option.
    smuggled = callback_of(
        fake, fake.slash_command("retrain", {"dataset": "shapes epochs:5000"}, "424242", snowflake())
    )
    assert smuggled["data"]["content"].startswith("Unknown dataset 'shapes epochs:5000'.")
    # Names are normalised by core (case, spaces), as typed in any front-end.
    accepted = callback_of(
        fake,
        fake.slash_command(
            "retrain", {"dataset": "Shapes", "epochs": 3, "model": " DFGAN "}, "424242", snowflake()
        ),
    )
    assert accepted["data"]["content"].startswith("Queued training run ")
    run = TrainingClient(bot.settings).status(accepted["data"]["content"].split()[3].rstrip(":"))
    assert (run.dataset, run.epochs, run.model) == ("shapes", 3, "dfgan")


def test_settings_become_the_defaults_of_imagine(
    fake: FakeDiscord, bot: ImagineBot, queue: QueueClient
) -> None:
    user = new_user()
    saved = callback_of(
        fake, fake.slash_command("settings", {"engine": "dfgan", "steps": 2, "ar": "16:9"}, user, snowflake())
    )
    assert saved["data"]["content"].startswith("Your defaults: engines dfgan, steps 2,")
    assert saved["data"]["content"].endswith("ar 16:9.")
    bad = callback_of(fake, fake.slash_command("settings", {"steps": 500}, user, snowflake()))
    assert bad["data"]["content"] == "steps must be between 1 and 100." and bad["data"]["flags"] == 64
    interaction = fake.slash_command("imagine", {"prompt": "a small square"}, user, snowflake())
    delivery_of(fake, interaction)
    [(record, _)] = queue.user_jobs(f"discord:{user}", unfinished_only=False)
    assert record.request.engines == ["dfgan"] and record.steps == 2
    assert (record.request.aspect, record.width, record.height) == ("16:9", 88, 48)


def test_cancel_and_queue_commands(fake: FakeDiscord, bot: ImagineBot, queue: QueueClient) -> None:
    owner, other = new_user(), new_user()
    # A job that stays queued: stored, but no generate task sent.
    record = discord_record(queue, status=JobStatus.QUEUED, token="itok-cancel", user_id=owner)
    queue.redis.rpush(f"ib:userjobs:discord:{owner}", record.id)
    listed = callback_of(fake, fake.slash_command("queue", {}, owner, snowflake()))
    assert record.id in listed["data"]["content"] and listed["data"]["flags"] == 64
    refused = callback_of(fake, fake.slash_command("cancel", {"job": record.id}, other, snowflake()))
    assert refused["data"]["content"] == "You can only cancel your own jobs."
    unknown = callback_of(fake, fake.slash_command("cancel", {"job": "../../x"}, owner, snowflake()))
    assert unknown["data"]["content"] == "No such job (it may have expired)."
    done = callback_of(fake, fake.slash_command("cancel", {}, owner, snowflake()))
    assert done["data"]["content"] == "Cancelled “a red circle”."
    # The cancellation is delivered to the job's own conversation.
    [note] = fake.wait_for(
        lambda: fake.calls_to("POST", f"/webhooks/{APP_ID}/itok-cancel"), what="cancel note"
    )
    assert note.json["content"] == "Cancelled: “a red circle”"


def test_reroll_and_variation_buttons_queue_new_jobs(
    fake: FakeDiscord, bot: ImagineBot, queue: QueueClient
) -> None:
    user, channel = new_user(), snowflake()
    first = fake.slash_command(
        "imagine", {"prompt": "a blue circle", "engine": "dfgan", "steps": 2}, user, channel
    )
    components = delivery_of(fake, first).json["components"]
    [(original, _)] = queue.user_jobs(f"discord:{user}", unfinished_only=False)

    click = fake.button_click(f"rr:{original.id}", user, channel, components)
    assert callback_of(fake, click)["type"] == 5
    assert_png(delivery_of(fake, click).files["files[0]"])
    jobs = [r for r, _ in queue.user_jobs(f"discord:{user}", unfinished_only=False)]
    assert len(jobs) == 2 and jobs[1].id != original.id
    assert (
        jobs[1].request.prompt == "a blue circle"
        and jobs[1].request.conversation.interaction_token == click["token"]
    )

    info = fake.button_click(f"i:{original.id}", new_user(), channel, components)
    answer = callback_of(fake, info)
    assert answer["data"]["flags"] == 64 and f"seed {original.seed}" in answer["data"]["content"]


def test_discord_front_end_never_imports_torch() -> None:
    code = (
        "import sys, bots.discord.bot, bots.discord.commands, bots.discord.buttons, bots.discord.send; "
        "assert 'torch' not in sys.modules, 'torch imported'"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


def test_run_without_a_token_says_what_to_set(discord_settings: Settings) -> None:
    with pytest.raises(ValueError, match="IMAGINEBOT_DISCORD_TOKEN"):
        run(discord_settings.model_copy(update={"discord_token": None}))


def test_variation_button_queues_one_engine_only(
    fake: FakeDiscord, bot: ImagineBot, queue: QueueClient
) -> None:
    user, channel = new_user(), "777"  # the job's own channel: buttons act only where the job was posted
    # A finished two-engine job the bot has never seen (as after a restart): the button still works.
    original = discord_record(queue, token="itok-two-engines", user_id=user)
    original.request.engines = ["dfgan", "diffusion"]
    queue.jobs.save(original)
    components = old_buttons(original.id)
    click = fake.button_click(f"ib:vd:{original.id}", user, channel, components)
    assert callback_of(fake, click)["type"] == 5
    assert_png(delivery_of(fake, click).files["files[0]"])
    [(variation, _)] = queue.user_jobs(f"discord:{user}", unfinished_only=False)
    assert variation.request.engines == ["dfgan"] and variation.request.prompt == original.request.prompt
    assert [r.engine for r in variation.results] == ["dfgan"]


def test_text_messages_for_training_go_to_the_channel_with_the_bot_token(
    fake: FakeDiscord, discord_settings: Settings
) -> None:
    conversation = Conversation(platform="discord", chat_id="777", thread_id="889")
    discord_send.send_text(conversation, "Training run abc: step 10/20", discord_settings)
    [call] = fake.calls_to("POST", "/channels/889/messages")
    assert call.headers["Authorization"] == f"Bot {BOT_TOKEN}"
    assert call.json["content"] == "Training run abc: step 10/20"
    assert call.json["allowed_mentions"] == {"parse": []}


def test_retrain_cancel_cancels_the_admins_latest_run_or_a_named_one(
    fake: FakeDiscord, bot: ImagineBot
) -> None:
    refused = callback_of(fake, fake.slash_command("retrain_cancel", {}, new_user(), snowflake()))
    assert (
        refused["data"]["content"] == "Only admins can cancel training runs."
        and refused["data"]["flags"] == 64
    )
    accepted = callback_of(fake, fake.slash_command("retrain", {"dataset": "shapes"}, "424242", snowflake()))
    run_id = accepted["data"]["content"].split()[3].rstrip(":")
    latest = callback_of(fake, fake.slash_command("retrain_cancel", {}, "424242", snowflake()))
    assert latest["data"]["content"].startswith(f"Cancelled training run {run_id} ")
    assert TrainingClient(bot.settings).status(run_id).status == "cancelled"
    again = callback_of(fake, fake.slash_command("retrain_cancel", {"run": run_id}, "424242", snowflake()))
    assert again["data"]["content"] == "That training run is already cancelled."
    unknown = callback_of(
        fake, fake.slash_command("retrain_cancel", {"run": "0" * 16}, "424242", snowflake())
    )
    assert unknown["data"]["content"] == f"No training run {'0' * 16} (it may have expired)."
    bad = callback_of(fake, fake.slash_command("retrain_cancel", {"run": "../etc"}, "424242", snowflake()))
    assert bad["data"]["content"].startswith("Usage: /retrain cancel [run id]")


def test_training_pictures_go_to_the_channel_as_attachments(
    fake: FakeDiscord, discord_settings: Settings
) -> None:
    import io

    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", (8, 8), "red").save(out, "PNG")
    conversation = Conversation(platform="discord", chat_id="778")
    discord_send.send_photo_text(
        conversation, out.getvalue(), "Training run abc: loss curve", discord_settings
    )
    [call] = fake.calls_to("POST", "/channels/778/messages")
    assert call.headers["Authorization"] == f"Bot {BOT_TOKEN}"
    assert call.json["content"] == "Training run abc: loss curve" and call.json["allowed_mentions"] == {
        "parse": []
    }
    assert call.files["files[0]"] == out.getvalue()


def test_a_forged_button_from_another_channel_reads_and_reuses_nothing(
    fake: FakeDiscord, bot: ImagineBot, queue: QueueClient
) -> None:
    # A job posted in channel 777; the forged custom_ids are pressed in a channel of somebody else.
    secret = discord_record(queue, token="itok-forged", user_id=new_user())
    attacker, elsewhere = new_user(), snowflake()
    components = old_buttons(secret.id)
    for action in ("info", "rr", "vd"):
        forged = fake.button_click(f"ib:{action}:{secret.id}", attacker, elsewhere, components)
        answer = callback_of(fake, forged)
        assert answer["data"]["content"] == "That button does not belong to this chat.", action
        assert "a red circle" not in answer["data"]["content"] and answer["data"]["flags"] == 64
    assert queue.user_jobs(f"discord:{attacker}", unfinished_only=False) == []


def test_mentions_in_a_prompt_never_ping_anyone(fake: FakeDiscord, bot: ImagineBot) -> None:
    user, channel = new_user(), snowflake()
    prompt = "@everyone and <@&123456789> look at a red circle"
    interaction = fake.slash_command(
        "imagine", {"prompt": prompt, "engine": "dfgan", "steps": 1}, user, channel
    )
    original = f"/webhooks/{APP_ID}/{interaction['token']}/messages/@original"
    [edit, *_] = fake.wait_for(lambda: fake.calls_to("PATCH", original), timeout_s=10, what="queued answer")
    assert "@everyone" in edit.json["content"]  # the text is echoed as written…
    assert edit.json["allowed_mentions"] == {"parse": []}  # …and pings nobody
    delivered = delivery_of(fake, interaction)
    assert delivered.json["allowed_mentions"]["parse"] == []


# --- image input, /models, /nsfw ------------------------------------------------------------------


def original_edits(fake: FakeDiscord, interaction: dict) -> list[Call]:
    """The edits of the interaction's deferred answer so far."""
    return fake.calls_to("PATCH", f"/webhooks/{APP_ID}/{interaction['token']}/messages/@original")


def test_imagine_with_an_image_draws_from_the_stored_upload(
    fake: FakeDiscord, bot: ImagineBot, queue: QueueClient
) -> None:
    user, channel = new_user(), snowflake()
    sent = fake.attachment("photo.jpg", picture("JPEG"))
    options = {"prompt": "a green square", "engine": "diffusion", "steps": 2, "image": sent, "strength": 0.5}
    interaction = fake.slash_command("imagine", options, user, channel)
    assert callback_of(fake, interaction)["type"] == 5  # deferred first: the download comes after
    assert_png(delivery_of(fake, interaction, timeout_s=120).files["files[0]"])
    assert fake.downloads.count(sent["id"]) == 1  # fetched once, by then
    [(record, _)] = queue.user_jobs(f"discord:{user}", unfinished_only=False)
    key = record.request.image_key
    assert key is not None and key.startswith("ib:upload:") and record.request.strength == 0.5
    stored = UploadStore(queue.redis, bot.settings.result_ttl_s).get(key)
    assert stored is not None and stored.startswith(PNG_MAGIC)  # checked and re-encoded by core
    assert Image.open(io.BytesIO(stored)).size == (80, 60)
    [diffusion] = record.results
    assert diffusion.engine == "diffusion" and not diffusion.text_only
    assert record.request.nsfw == "withhold"  # the fake's channel is not marked NSFW


@pytest.mark.parametrize(
    ("name", "data", "message"),
    [
        ("notes.png", b"just some text", "That file is not an image I can read."),
        ("anim.gif", picture("GIF"), "GIF images are not accepted. Send a PNG, JPEG or WebP picture."),
        ("cut.png", truncated_png(), "The image is incomplete (the file was cut off)."),
        ("gone.png", None, "I could not fetch the image from the chat service; please send it again."),
    ],
)
def test_a_bad_image_gets_its_specific_message_in_place_of_the_answer_and_nothing_is_queued(
    fake: FakeDiscord, bot: ImagineBot, queue: QueueClient, name: str, data: bytes | None, message: str
) -> None:
    user = new_user()
    sent = fake.attachment(name, data or picture("PNG"))
    if data is None:
        fake.files.pop(sent["id"])  # the CDN answers 404
    interaction = fake.slash_command("imagine", {"prompt": "a cat", "image": sent}, user, snowflake())
    assert callback_of(fake, interaction)["type"] == 5
    [edit] = fake.wait_for(lambda: original_edits(fake, interaction), timeout_s=10, what="the refusal")
    assert edit.json["content"].startswith(message)
    time.sleep(0.3)
    assert queue.user_jobs(f"discord:{user}", unfinished_only=False) == []
    assert not fake.posted(lambda c: interaction["token"] in c.path)


def test_an_image_announced_too_big_is_refused_before_any_download(
    fake: FakeDiscord, bot: ImagineBot, queue: QueueClient
) -> None:
    user = new_user()
    sent = fake.attachment("huge.png", picture("PNG"), size=11 * 1024 * 1024)
    interaction = fake.slash_command("imagine", {"prompt": "a cat", "image": sent}, user, snowflake())
    answer = callback_of(fake, interaction)
    assert answer["type"] == 4 and answer["data"]["flags"] == 64
    assert answer["data"]["content"] == "The image is 11.0 MB; the limit is 10.0 MB."
    time.sleep(0.3)
    assert sent["id"] not in fake.downloads
    assert queue.user_jobs(f"discord:{user}", unfinished_only=False) == []


def test_models_lists_the_models_and_loras_for_everyone(fake: FakeDiscord, bot: ImagineBot) -> None:
    answer = callback_of(fake, fake.slash_command("models", {}, new_user(), snowflake()))
    assert answer["data"]["flags"] == 64
    content = answer["data"]["content"]
    assert content.startswith("Models (--model NAME):\n• default") and "LoRAs (--lora NAME" in content


def test_admins_set_a_channels_nsfw_rule_which_applies_only_where_discord_marks_it(
    fake: FakeDiscord, bot: ImagineBot, queue: QueueClient
) -> None:
    channel, admin = snowflake(), "424242"
    refused = callback_of(fake, fake.slash_command("nsfw", {"rule": "allow"}, new_user(), channel))
    assert refused["data"]["content"] == "Only admins can set a channel's NSFW rule."
    marked = {"channel_nsfw": True}
    set_rule = callback_of(fake, fake.slash_command("nsfw", {"rule": "spoiler"}, admin, channel, **marked))
    assert set_rule["data"]["content"] == (
        "This channel's NSFW rule is now spoiler: flagged pictures are posted behind a spoiler."
    )
    assert set_rule["data"]["flags"] == 64
    unmarked = callback_of(fake, fake.slash_command("nsfw", {}, admin, channel))
    assert unmarked["data"]["content"].endswith(
        "This channel is not marked NSFW on Discord, so they are withheld here."
    )
    # The rule goes into the jobs drawn there: as set where Discord marks the channel NSFW, else withheld.
    for is_marked, expected in ((True, "spoiler"), (False, "withhold")):
        user = new_user()
        options = {"prompt": "a red circle", "engine": "dfgan", "steps": 1}
        callback_of(fake, fake.slash_command("imagine", options, user, channel, channel_nsfw=is_marked))
        # The deferred answer comes before the job is queued: wait for it.
        jobs_of = functools.partial(queue.user_jobs, f"discord:{user}", unfinished_only=False)
        [(record, _)] = fake.wait_for(jobs_of, what="the job")
        assert record.request.nsfw == expected
    # A reroll takes the rule of where its button is pressed, as it is now.
    buttons = old_buttons(record.id)
    callback_of(fake, fake.button_click(f"ib:rr:{record.id}", user, channel, buttons, channel_nsfw=True))
    jobs = fake.wait_for(lambda: queue.user_jobs(f"discord:{user}", unfinished_only=False)[1:], what="reroll")
    [(reroll, _)] = jobs
    assert reroll.request.nsfw == "spoiler"
    cleared = callback_of(fake, fake.slash_command("nsfw", {"rule": "default"}, admin, channel, **marked))
    assert cleared["data"]["content"].startswith("This channel now follows the server's NSFW rule: ")
    assert bot.service.channel_nsfw.get("discord", channel) is None
