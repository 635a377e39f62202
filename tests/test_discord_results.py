"""Results on Discord: the upload limit, live previews, the result buttons (U-n / V-n / 🔄 / Info /
Remix), the remix modal and ``/show``.

The real discord.py bot runs against the fake Discord (tests/helpers/fake_discord.py) and the session's
real Celery worker draws and delivers to the same fake; ``send.py`` is also called directly for the
upload-limit cases.
"""

from __future__ import annotations

import io
import uuid
from collections.abc import Iterator

import pytest
import redis
from PIL import Image

from bots.discord import send as discord_send
from bots.discord.bot import ImagineBot
from bots.discord.components import result_components as discord_rows
from bots.discord.progress import PREVIEW_INTERVAL_S
from core.delivery import DeliveryContext
from core.job_client import QueueClient
from core.jobs import Conversation, EngineResult, JobRecord, JobRequest, JobStatus
from core.picture_fit import fit_picture
from core.settings import Settings
from tests.helpers.bot_threads import DISCORD_BOT_TOKEN, discord_bot_on_fake
from tests.helpers.fake_discord import APP_ID, Call, FakeDiscord, snowflake
from tests.helpers.fake_platforms import running, worker_posting_to

DEFAULT_LIMIT = 10 * 1024 * 1024


def noisy_png(size: tuple[int, int] = (384, 256)) -> bytes:
    """A PNG that compresses badly (noise): big for its size."""
    out = io.BytesIO()
    Image.effect_noise(size, 80).convert("RGB").save(out, format="PNG")
    return out.getvalue()


def decoded(data: bytes) -> Image.Image:
    """``data`` decoded by Pillow (fails on anything that is not a whole picture)."""
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


# --- fitting a picture under a limit ------------------------------------------------------------


def test_a_picture_under_the_limit_stays_the_png_it_was() -> None:
    png = noisy_png((64, 64))
    fitted = fit_picture(png, DEFAULT_LIMIT)
    assert (fitted.data, fitted.format, fitted.reencoded) == (png, "PNG", False)


@pytest.mark.parametrize("limit", [120_000, 20_000, 3_000])
def test_a_picture_over_the_limit_is_re_encoded_then_shrunk_until_it_fits(limit: int) -> None:
    png = noisy_png()
    assert len(png) > limit
    fitted = fit_picture(png, limit)
    assert fitted.reencoded and fitted.format in ("WEBP", "JPEG")
    assert len(fitted.data) <= limit
    image = decoded(fitted.data)
    assert (image.width, image.height) == (fitted.width, fitted.height)
    assert abs(image.width / image.height - 384 / 256) < 0.05  # the shape is kept
    if limit < 20_000:
        assert image.width < 384  # noise this size does not fit without shrinking


def test_a_side_limit_downscales_even_a_small_file() -> None:
    fitted = fit_picture(noisy_png((600, 200)), DEFAULT_LIMIT, max_side_sum=400)
    assert fitted.width + fitted.height <= 400 and fitted.reencoded


# --- send.py: the interaction's attachment_size_limit ------------------------------------------


@pytest.fixture
def queue(settings: Settings, clean_redis: redis.Redis) -> Iterator[QueueClient]:
    """A queue client on the session's Redis."""
    client = QueueClient(settings)
    yield client
    client.redis.close()


def finished_record(queue: QueueClient, png: bytes, limit: int | None, token: str) -> JobRecord:
    """A finished one-picture DF-GAN job whose paired image is ``png``, asked where uploads may be
    ``limit`` bytes."""
    request = JobRequest(
        prompt="a noisy field",
        engines=["dfgan"],
        steps=2,
        user="discord:555",
        conversation=Conversation(
            platform="discord",
            chat_id="777",
            interaction_token=token,
            application_id=APP_ID,
            attachment_size_limit=limit,
        ),
    )
    record = JobRecord(request=request, seed=7, steps=2, size=64, status=JobStatus.DONE)
    record.pair_key = queue.images.put(record.id, "pair", png)
    picture = queue.images.put(record.id, "dfgan-0", png)
    record.results = [EngineResult(engine="dfgan", version="v1", seconds=0.1, image_keys=[picture])]
    queue.jobs.save(record)
    return record


def test_an_oversize_pair_is_re_encoded_under_the_interactions_limit(
    settings: Settings, queue: QueueClient
) -> None:
    png = noisy_png()
    limit = len(png) // 4
    with running(FakeDiscord()) as fake:
        fake.attachment_size_limit = limit
        to_fake = settings.model_copy(update={"discord_api_base": fake.api_base})
        context = DeliveryContext(settings=to_fake, images=queue.images, history=queue.history)
        record = finished_record(queue, png, limit, "itok-limit")
        discord_send.send(record, context)
        [call] = fake.calls_to("POST", f"/webhooks/{APP_ID}/itok-limit")
    assert call.status == 200
    data = call.files["files[0]"]
    assert len(data) <= limit < len(png)
    filename = call.json["attachments"][0]["filename"]
    assert filename.rsplit(".", 1)[1] in ("webp", "jpg") and filename.startswith(f"imaginebot-{record.id}")
    assert decoded(data).format in ("WEBP", "JPEG")
    assert "upload limit" in call.json["content"].splitlines()[-1]


def test_a_picture_refused_as_too_large_is_sent_again_smaller(settings: Settings, queue: QueueClient) -> None:
    png = noisy_png()
    limit = len(png) // 4
    with running(FakeDiscord()) as fake:
        fake.attachment_size_limit = limit  # lower than Discord's default, which the record assumes
        to_fake = settings.model_copy(update={"discord_api_base": fake.api_base})
        context = DeliveryContext(settings=to_fake, images=queue.images, history=queue.history)
        record = finished_record(queue, png, None, "itok-unknown")
        discord_send.send(record, context)
        calls = fake.calls_to("POST", f"/webhooks/{APP_ID}/itok-unknown")
    assert calls[0].status == 413 and calls[0].files["files[0]"] == png  # the fake enforces its limit
    assert [c.status for c in calls[1:]][-1] == 200 and len(fake.posted(lambda c: c in calls)) == 1
    assert len(calls[-1].files["files[0]"]) <= limit


# --- the real bot on the fake Discord, the session's worker drawing ------------------------------


@pytest.fixture(scope="module")
def discord(settings: Settings, celery_worker: object) -> Iterator[tuple[FakeDiscord, ImagineBot]]:
    """The fake Discord, the real bot logged in to it, and the session's worker posting to it."""
    with (
        discord_bot_on_fake(settings.model_copy(update={"progress_interval_s": 0.2})) as (fake, bot),
        worker_posting_to(settings, discord=fake, discord_token=DISCORD_BOT_TOKEN),
    ):
        yield fake, bot


@pytest.fixture
def fake(discord: tuple[FakeDiscord, ImagineBot], queue: QueueClient) -> Iterator[FakeDiscord]:
    """The module's fake Discord, with Discord's default upload limit again after the test."""
    server = discord[0]
    yield server
    server.attachment_size_limit = DEFAULT_LIMIT


def new_user() -> str:
    """A fresh Discord user id (its rate limit and defaults start empty)."""
    return str(700_000 + uuid.uuid4().int % 100_000)


def labels(components: list[dict]) -> list[list[str]]:
    """The buttons' labels, row by row."""
    return [[b["label"] for b in row["components"]] for row in components]


def custom_ids(components: list[dict]) -> list[str]:
    """Every button's ``custom_id``."""
    return [b["custom_id"] for row in components for b in row["components"]]


def delivered(fake: FakeDiscord, interaction: dict, timeout_s: float = 90.0) -> Call:
    """The result posted as the interaction's follow-up."""
    path = f"/webhooks/{APP_ID}/{interaction['token']}"
    posts = fake.wait_for(
        lambda: [c for c in fake.calls_to("POST", path) if c.status == 200], timeout_s, what=path
    )
    return posts[0]


def callback(fake: FakeDiscord, interaction: dict) -> dict:
    """The interaction's first answer (its callback's JSON)."""
    path = f"/interactions/{interaction['id']}/{interaction['token']}/callback"
    [call] = fake.wait_for(lambda: fake.calls_to("POST", path), timeout_s=10, what=path)
    return call.json


def edits(fake: FakeDiscord, interaction: dict) -> list[Call]:
    """The edits of the interaction's (deferred) answer so far."""
    return fake.calls_to("PATCH", f"/webhooks/{APP_ID}/{interaction['token']}/messages/@original")


def edit_with_files(fake: FakeDiscord, interaction: dict) -> Call:
    """The first edit of the interaction's answer that uploads a file."""
    found = fake.wait_for(lambda: [c for c in edits(fake, interaction) if c.files], 30, what="an upload")
    return found[0]


def grid(fake: FakeDiscord, queue: QueueClient, user: str, channel: str) -> tuple[JobRecord, list[dict]]:
    """``/imagine`` four DF-GAN pictures; the finished job and the buttons under its result."""
    options = {"prompt": "a red circle", "engine": "dfgan", "steps": 1, "count": 4}
    interaction = fake.slash_command("imagine", options, user, channel)
    components = delivered(fake, interaction).json["components"]
    [(record, _)] = queue.user_jobs(f"discord:{user}", unfinished_only=False)
    return record, components


def newer_jobs(queue: QueueClient, user: str, first: JobRecord) -> list[JobRecord]:
    """``user``'s jobs other than ``first``."""
    return [r for r, _ in queue.user_jobs(f"discord:{user}", unfinished_only=False) if r.id != first.id]


def test_a_grid_is_delivered_with_u_v_reroll_info_and_remix_buttons(
    fake: FakeDiscord, queue: QueueClient
) -> None:
    record, components = grid(fake, queue, new_user(), snowflake())
    assert labels(components) == [
        ["U1", "U2", "U3", "U4"],
        ["V1", "V2", "V3", "V4"],
        ["🔄", "ℹ️ Info", "✏️ Remix"],
    ]
    assert custom_ids(components)[:2] == [f"u:{record.id}:0", f"u:{record.id}:1"]
    assert all(len(c) <= 100 for c in custom_ids(components))


def test_u2_posts_that_one_picture_full_size_with_upscale_vary_and_remix_under_it(
    fake: FakeDiscord, queue: QueueClient
) -> None:
    user, channel = new_user(), snowflake()
    record, components = grid(fake, queue, user, channel)
    click = fake.button_click(f"u:{record.id}:1", user, channel, components)
    post = edit_with_files(fake, click)
    [data] = post.files.values()
    picture = decoded(data)
    stored = decoded(queue.images.get(record.results[0].image_keys[1]) or b"")
    assert picture.size == stored.size == (record.size, record.size)
    assert picture.tobytes() == stored.tobytes()  # that picture, not another one
    assert post.json["content"].startswith(f"Picture 2 of job {record.id[:8]}")
    assert labels(post.json["components"]) == [["Upscale ×2", "Vary", "✏️ Remix"]]
    assert custom_ids(post.json["components"])[1] == f"v:{record.id}:1"
    assert len(queue.user_jobs(f"discord:{user}", unfinished_only=False)) == 1  # nothing drawn
    # Under that picture, Upscale ×2 queues an upscale of it.
    upscale = fake.button_click(f"up:{record.id}:1:dfgan", user, channel, post.json["components"])
    assert callback(fake, upscale)["type"] == 5
    [job] = fake.wait_for(lambda: newer_jobs(queue, user, record), what="the upscale")
    source = job.request.source
    assert source is not None and (source.job_id, source.index, source.kind) == (record.id, 1, "upscale")
    assert job.request.engines == ["upscale"]


def test_v1_queues_a_variation_of_picture_1(fake: FakeDiscord, queue: QueueClient) -> None:
    user, channel = new_user(), snowflake()
    record, components = grid(fake, queue, user, channel)
    click = fake.button_click(f"v:{record.id}:0", user, channel, components)
    assert callback(fake, click)["type"] == 5  # deferred: a job is queued
    jobs = fake.wait_for(lambda: newer_jobs(queue, user, record), what="the variation")
    source = jobs[0].request.source
    assert source is not None and (source.job_id, source.index, source.kind) == (record.id, 0, "variation")
    assert jobs[0].request.prompt == "a red circle"
    assert jobs[0].request.conversation.interaction_token == click["token"]
    assert decoded(delivered(fake, click).files["files[0]"]).format == "PNG"  # drawn and posted


def test_remix_opens_a_prefilled_modal_whose_answer_queues_the_new_prompt(
    fake: FakeDiscord, queue: QueueClient
) -> None:
    user, channel = new_user(), snowflake()
    record, components = grid(fake, queue, user, channel)
    click = fake.button_click(f"rx:{record.id}:0", user, channel, components)
    modal = callback(fake, click)
    assert modal["type"] == 9 and modal["data"]["custom_id"] == f"ib:remix:{record.id}:0"
    [text_input] = [c["component"] for c in modal["data"]["components"]]
    assert text_input["value"] == "a red circle" and text_input["type"] == 4
    # A blank answer is refused privately and queues nothing.
    blank = fake.modal_submit(f"ib:remix:{record.id}:0", {text_input["custom_id"]: "   "}, user, channel)
    refused = callback(fake, blank)
    assert refused["type"] == 4 and refused["data"]["flags"] == 64
    assert refused["data"]["content"].startswith("Your prompt is empty.")
    assert newer_jobs(queue, user, record) == []
    # Answered as if after a restart: the bot keeps nothing of the modal it opened.
    answer = fake.modal_submit(
        f"ib:remix:{record.id}:0", {text_input["custom_id"]: "a blue square"}, user, channel
    )
    assert callback(fake, answer)["type"] == 5
    jobs = fake.wait_for(lambda: newer_jobs(queue, user, record), what="the remix")
    assert jobs[0].request.prompt == "a blue square"
    source = jobs[0].request.source
    assert source is not None and (source.job_id, source.kind) == (record.id, "remix")
    assert "“a blue square”" in delivered(fake, answer).json["content"]


def test_show_posts_an_old_job_again_with_its_buttons(fake: FakeDiscord, queue: QueueClient) -> None:
    user = new_user()
    # A job the bot never saw (as after a restart), finished in channel 777.
    old = finished_record(queue, noisy_png((96, 64)), None, "itok-long-gone")
    asked = fake.slash_command("show", {"job_id": old.id}, user, "777")
    post = edit_with_files(fake, asked)
    [data] = post.files.values()
    assert data == queue.images.get(old.pair_key or "")
    assert post.json["content"].startswith(f"“a noisy field” · job {old.id}")
    assert labels(post.json["components"])[-1] == ["🔄", "ℹ️ Info", "✏️ Remix"]
    # Its buttons work although this bot never posted that job: everything is in the custom_id.
    info = fake.button_click(f"i:{old.id}", user, "777", post.json["components"])
    assert f"seed {old.seed}" in callback(fake, info)["data"]["content"]
    # Another channel's job is refused, privately, and nothing is posted.
    refused = callback(fake, fake.slash_command("show", {"job_id": old.id}, user, snowflake()))
    assert refused["type"] == 4 and refused["data"]["flags"] == 64
    assert "a noisy field" not in refused["data"]["content"]


def test_an_oversize_result_and_picked_picture_fit_the_announced_limit(
    fake: FakeDiscord, queue: QueueClient
) -> None:
    fake.attachment_size_limit = 2_000
    user, channel = new_user(), snowflake()
    record, components = grid(fake, queue, user, channel)
    pair = queue.images.get(record.pair_key or "") or b""
    assert len(pair) > fake.attachment_size_limit  # the PNG itself would be refused (413)
    assert record.request.conversation.attachment_size_limit == 2_000
    result = delivered(fake, fake.interactions_sent[-1])
    [data] = result.files.values()
    assert len(data) <= 2_000 and decoded(data).format in ("WEBP", "JPEG")
    click = fake.button_click(f"u:{record.id}:0", user, channel, components)
    [picked] = edit_with_files(fake, click).files.values()
    assert len(picked) <= 2_000
    assert not [c for c in fake.calls if c.status == 413]


@pytest.fixture
def preview_interval(discord: tuple[FakeDiscord, ImagineBot]) -> Iterator[float]:
    """A shorter interval between two previews of one answer, for this test (restored after it)."""
    tracker = discord[1].progress
    saved, tracker.preview_interval_s = tracker.preview_interval_s, 0.8
    yield tracker.preview_interval_s
    tracker.preview_interval_s = saved


def test_the_status_message_shows_a_live_preview_before_the_result(
    fake: FakeDiscord, queue: QueueClient, preview_interval: float
) -> None:
    assert PREVIEW_INTERVAL_S >= 3.0  # the bot's own pace; this test runs faster
    user, channel = new_user(), snowflake()
    # 100 steps: previews at steps 25, 50 and 75, seconds apart even on a quiet machine.
    options = {"prompt": "a green square", "engine": "diffusion", "steps": 100, "seed": 3}
    interaction = fake.slash_command("imagine", options, user, channel)
    result = delivered(fake, interaction)
    previews = [c for c in edits(fake, interaction) if c.files and c.at < result.at]
    assert len(previews) >= 2, [c.json.get("content") for c in edits(fake, interaction)]
    [(record, _)] = queue.user_jobs(f"discord:{user}", unfinished_only=False)
    for edit in previews:
        [data] = edit.files.values()
        preview = decoded(data)
        assert preview.format == "PNG" and max(preview.size) <= 256
        assert edit.json["attachments"][0]["filename"] == "preview.png"
    # At most one new preview per interval per message (Discord's edit limits).
    gaps = [b.at - a.at for a, b in zip(previews, previews[1:], strict=False)]
    assert all(gap >= 0.9 * preview_interval for gap in gaps), gaps
    assert len({bytes(next(iter(c.files.values()))) for c in previews}) == len(previews)  # each one new
    # Once done, the answer drops the preview: the result is its own message.
    final = fake.wait_for(
        lambda: [c for c in edits(fake, interaction) if c.json.get("content", "").startswith("Done")],
        what="the final edit",
    )
    assert final[-1].json["attachments"] == [] and record.id


def test_a_forged_button_from_another_channel_posts_draws_and_asks_nothing(
    fake: FakeDiscord, queue: QueueClient
) -> None:
    secret = finished_record(queue, noisy_png((64, 64)), None, "itok-secret")  # posted in channel 777
    attacker, elsewhere = new_user(), snowflake()
    components = discord_rows(secret)
    for data in custom_ids(components):
        forged = callback(fake, fake.button_click(data, attacker, elsewhere, components))
        assert forged["type"] == 4 and forged["data"]["flags"] == 64, data
        assert forged["data"]["content"] == "That button does not belong to this chat.", data
    assert queue.user_jobs(f"discord:{attacker}", unfinished_only=False) == []
