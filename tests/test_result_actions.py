"""The buttons under a result (issue 15) through the conversation service, with the session's real
Celery worker drawing: U-n posts a stored picture (no new job), V-n queues a variation (diffusion:
image-to-image from that picture; DF-GAN: noise near its noise), remix edits the prompt, 🔄 rerolls,
Upscale ×2 queues the upscaler from the picture, /show brings a job back only to its chat or its
owner, and every button's data (old ones too) decodes to its action within Telegram's 64 bytes.
"""

from __future__ import annotations

import io
import uuid
from pathlib import Path

import numpy as np
import pytest
import redis
import torch
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from core.buttons import NOT_THIS_CHAT_TEXT
from core.conversation import (
    Again,
    Caller,
    ConversationService,
    FromText,
    Imagine,
    JobInfo,
    Pick,
    Picked,
    Prepared,
    Queued,
    Refused,
    RemixAsk,
    RemixPrompt,
    ResultShown,
    Show,
    Upscale,
    Vary,
)
from core.job_client import QueueClient
from core.jobs import Conversation, EngineResult, JobRecord, JobRequest, JobStatus, SourcePicture
from core.result_buttons import MAX_DATA_BYTES, picked_buttons, read_button, result_buttons
from core.settings import KNOWN_ENGINES, Settings
from training.seeds import seed_noise
from worker.engines.dfgan import near_noise
from worker.engines.job_requests import NOISE_MIX
from worker.engines.upscale import PLAIN_VERSION

JOB = "0123456789abcdef"


@pytest.fixture
def service(settings: Settings, celery_worker: object, clean_redis: redis.Redis) -> ConversationService:
    return ConversationService(settings, QueueClient(settings))


def web_caller(service: ConversationService, chat: str | None = None) -> Caller:
    """A web chat's caller (the web chat's user id is its conversation id)."""
    chat = chat or "results-" + uuid.uuid4().hex[:10]
    return service.caller(chat, Conversation(platform="web", chat_id=chat))


def drawn(service: ConversationService, reply: object) -> JobRecord:
    """The queued job of ``reply``, once the worker finished it."""
    assert isinstance(reply, Queued), reply
    record = service.queue.wait(reply.record.id, timeout_s=300, delivered=False)
    assert record.status == JobStatus.DONE, record.error
    return record


def pixels(service: ConversationService, key: str) -> np.ndarray:
    png = service.queue.images.get(key) if key.startswith("ib:img:") else service.uploads.get(key)
    assert png is not None, key
    with Image.open(io.BytesIO(png)) as image:
        return np.asarray(image.convert("RGB"), dtype=np.float64)


def picture(record: JobRecord, engine: str, index: int) -> str:
    (result,) = [r for r in record.results if r.engine == engine]
    return result.image_keys[index]


def imagine(service: ConversationService, me: Caller, text: str) -> JobRecord:
    return drawn(service, service.handle(me, FromText(Imagine, text)))


@pytest.mark.timeout(900)
def test_pick_vary_remix_and_reroll_from_one_grid(service: ConversationService) -> None:
    me = web_caller(service)
    grid = imagine(service, me, "a red circle --n 2 --seed 7 --engine dfgan,diffusion")
    jobs_before = len(service.queue.user_jobs(me.user, unfinished_only=False))

    picked = service.handle(me, read_button(f"u:{grid.id}:1"))  # U2
    assert isinstance(picked, Picked) and picked.index == 1
    assert [(p.engine, p.image_key) for p in picked.pictures] == [
        ("dfgan", picture(grid, "dfgan", 1)),
        ("diffusion", picture(grid, "diffusion", 1)),
    ]
    for out in picked.pictures:
        assert pixels(service, out.image_key).shape == (out.height, out.width, 3)
    assert picked.text == f"Picture 2 of job {grid.id[:8]}… — DF-GAN, Diffusion"
    assert len(service.queue.user_jobs(me.user, unfinished_only=False)) == jobs_before  # nothing drawn

    prepared = service.prepare(me, read_button(f"v:{grid.id}:0"))  # V1
    assert isinstance(prepared, Prepared) and prepared.text == "Drawing a variation of picture 1…"
    request = prepared.request
    assert request.source == SourcePicture(
        job_id=grid.id, engine="diffusion", index=0, seed=grid.seeds[0], kind="variation"
    )
    assert request.image_key is not None and request.strength == 0.6 and request.seed is None
    assert np.array_equal(pixels(service, request.image_key), pixels(service, picture(grid, "diffusion", 0)))
    variation = drawn(service, service.submit(prepared))
    assert variation.seed != grid.seed and variation.request.prompt == "a red circle"
    assert {r.engine: r.text_only for r in variation.results} == {"dfgan": False, "diffusion": False}

    remix = service.prepare(me, Vary(grid.id, 1, prompt="a blue square --no red"))
    assert isinstance(remix, Prepared) and remix.text == "Remixing picture 2…"
    assert (remix.request.prompt, remix.request.negative_prompt) == ("a blue square", "red")
    assert remix.request.source is not None and remix.request.source.kind == "remix"
    assert remix.request.source.seed == grid.seeds[1]

    asked = service.handle(me, read_button(f"rx:{grid.id}:1"))
    assert isinstance(asked, RemixPrompt) and asked.prompt == "a red circle" and asked.index == 1
    assert "Reply to this message with the new prompt for picture 2" in asked.text

    reroll = service.handle(me, read_button(f"rr:{grid.id}"))  # 🔄
    assert isinstance(reroll, Queued) and reroll.record.request.source is None
    assert reroll.record.request.prompt == "a red circle" and reroll.record.request.count == 2
    assert reroll.record.request.seed is None and reroll.record.seed != grid.seed  # a new random seed


def mean_distance(a: list[np.ndarray], b: list[np.ndarray]) -> float:
    """Mean absolute pixel difference, in float64."""
    return float(np.mean([np.abs(x - y).mean() for x, y in zip(a, b, strict=True)]))


@pytest.mark.timeout(900)
def test_a_dfgan_variation_stays_nearer_its_picture_than_a_fresh_seed(service: ConversationService) -> None:
    me = web_caller(service)
    source = imagine(service, me, "a green triangle --n 4 --seed 21 --engine dfgan")
    varied = [drawn(service, service.handle(me, Vary(source.id, i))) for i in range(2)]
    fresh = drawn(service, service.handle(me, Again(source.id)))
    assert {r.text_only for v in varied for r in v.results} == {False}
    for i, variation in enumerate(varied):
        assert variation.request.source is not None and variation.request.source.seed == source.seeds[i]
        origin = [pixels(service, picture(source, "dfgan", i))] * 4
        near = [pixels(service, picture(variation, "dfgan", k)) for k in range(4)]
        far = [pixels(service, picture(fresh, "dfgan", k)) for k in range(4)]
        assert mean_distance(near, origin) < 0.5 * mean_distance(far, origin), i  # 1.6 vs 6.8 measured
    # A variation of a variation stays near the picture it was pressed under, not near its seed alone.
    again = drawn(service, service.handle(me, Vary(varied[0].id, 2)))
    assert again.request.source is not None
    assert (again.request.source.seed, again.request.source.earlier_seeds) == (
        varied[0].seeds[2],
        [source.seeds[0]],
    )
    origin = [pixels(service, picture(varied[0], "dfgan", 2))] * 4
    near = [pixels(service, picture(again, "dfgan", k)) for k in range(4)]
    far = [pixels(service, picture(fresh, "dfgan", k)) for k in range(4)]
    assert mean_distance(near, origin) < 0.5 * mean_distance(far, origin)


def test_noise_near_a_seed_is_nearer_than_a_fresh_seed_and_still_unit_normal() -> None:
    nz, source, seeds = 100, 5, list(range(100, 164))
    z_source = seed_noise([source], nz).double()
    near = near_noise(source, seeds, NOISE_MIX, nz).double()
    fresh = seed_noise(seeds, nz).double()
    near_d = torch.linalg.vector_norm(near - z_source, dim=1)
    fresh_d = torch.linalg.vector_norm(fresh - z_source, dim=1)
    assert bool((near_d < fresh_d).all())
    assert float(near_d.mean()) < 0.5 * float(fresh_d.mean())
    assert abs(float(near.std()) - 1.0) < 0.1  # normalised: the generator sees ordinary noise
    assert torch.equal(near_noise(source, seeds, 0.0, nz), seed_noise([source] * len(seeds), nz))
    # The noise of picture 0 of a variation, and a variation of that picture (its chain of seeds).
    picture_noise = near_noise(source, seeds[:1], NOISE_MIX, nz).double()
    chained = near_noise(seeds[0], seeds[1:], NOISE_MIX, nz, earlier=[source]).double()
    unchained = near_noise(seeds[0], seeds[1:], NOISE_MIX, nz).double()
    chained_d = torch.linalg.vector_norm(chained - picture_noise, dim=1)
    unchained_d = torch.linalg.vector_norm(unchained - picture_noise, dim=1)
    assert bool((chained_d < unchained_d).all())
    assert torch.allclose(chained_d.mean(), near_d.mean(), rtol=0.2)  # as near as a first variation


@pytest.mark.timeout(600)
def test_upscale_queues_the_upscaler_from_one_engines_picture(service: ConversationService) -> None:
    me = web_caller(service)
    grid = imagine(service, me, "a yellow star --n 2 --seed 3 --engine dfgan,diffusion")
    assert [[b.label for b in row] for row in picked_buttons(grid, 1)] == [
        ["Upscale ×2 DF-GAN", "Upscale ×2 Diffusion", "Vary", "✏️ Remix"]
    ]
    prepared = service.prepare(me, read_button(f"up:{grid.id}:1:dfgan"))
    assert isinstance(prepared, Prepared) and prepared.text == "Upscaling picture 2…"
    request = prepared.request
    assert (request.engines, request.count, request.seed) == (["upscale"], 1, grid.seeds[1])
    assert request.source == SourcePicture(
        job_id=grid.id, engine="dfgan", index=1, seed=grid.seeds[1], kind="upscale"
    )
    assert request.image_key is not None
    assert np.array_equal(pixels(service, request.image_key), pixels(service, picture(grid, "dfgan", 1)))
    upscaled = drawn(service, service.submit(prepared))  # no upscaler configured: a plain resize ×2
    (result,) = upscaled.results
    assert (result.engine, result.version, len(result.image_keys)) == ("upscale", PLAIN_VERSION, 1)
    height, width, _ = pixels(service, picture(grid, "dfgan", 1)).shape
    assert pixels(service, result.image_keys[0]).shape == (2 * height, 2 * width, 3)
    missing = service.prepare(me, Upscale(grid.id, 1, "hf-api"))
    assert isinstance(missing, Refused) and missing.code == "no_such_picture"
    beyond = service.handle(me, Pick(grid.id, 2))
    assert isinstance(beyond, Refused) and beyond.code == "no_such_picture"


@pytest.mark.timeout(600)
def test_show_and_buttons_only_for_this_chat_or_the_owner(service: ConversationService) -> None:
    owner = web_caller(service)
    record = imagine(service, owner, "a purple moon --seed 9 --engine dfgan")
    shown = service.handle(owner, FromText(Show, f"/show {record.id}"))
    assert isinstance(shown, ResultShown) and shown.record.id == record.id
    assert record.id in shown.text
    # The owner, from another conversation of theirs (same user id, another chat): allowed.
    elsewhere = service.caller(owner.user_id, Conversation(platform="web", chat_id="another-tab"))
    assert isinstance(service.handle(elsewhere, Show(record.id)), ResultShown)
    stranger = web_caller(service)
    for action in (
        Show(record.id),
        Pick(record.id, 0),
        Vary(record.id, 0),
        RemixAsk(record.id, 0),
        Upscale(record.id, 0, "dfgan"),
        JobInfo(record.id),
        Again(record.id),
    ):
        refused = service.handle(stranger, action)
        assert isinstance(refused, Refused) and refused.text == NOT_THIS_CHAT_TEXT, action
    unknown = service.handle(stranger, Show("f" * 16))
    assert isinstance(unknown, Refused) and unknown.code == "expired"
    bad = service.handle(owner, FromText(Show, "/show ../../etc"))
    assert isinstance(bad, Refused) and bad.code == "bad_job_id" and "/show" in bad.text
    waiting = record.model_copy(
        update={"id": uuid.uuid4().hex[:16], "status": JobStatus.QUEUED, "results": []}
    )
    service.queue.jobs.save(waiting)  # a job of this chat that no worker has drawn yet
    for action in (Pick(waiting.id, 0), Vary(waiting.id, 0), Show(waiting.id), RemixAsk(waiting.id, 0)):
        not_yet = service.handle(owner, action)
        assert isinstance(not_yet, Refused) and not_yet.code == "no_pictures", action


def test_old_button_data_still_decodes() -> None:
    assert read_button(f"rr:{JOB}") == Again(JOB)
    assert read_button(f"vd:{JOB}:diffusion", channel_is_nsfw=True) == Again(JOB, "diffusion", True)
    assert read_button(f"st:{JOB}") == JobInfo(JOB)
    assert read_button(f"ib:rr:{JOB}") == Again(JOB)
    assert read_button(f"ib:vd:{JOB}") == Again(JOB, "dfgan")
    assert read_button(f"ib:vf:{JOB}") == Again(JOB, "diffusion")
    assert read_button(f"ib:info:{JOB}") == JobInfo(JOB)
    for forged in (
        "",
        "u",
        f"u:{JOB}",
        f"u:{JOB}:x",
        f"u:{JOB}:-1",
        f"u:{JOB[:-1]}:1",
        f"up:{JOB}:0:shell",
        f"vd:{JOB}:rm -rf",
        f"zz:{JOB}",
        "u:../../etc/passwd:0",
        f"v:{JOB}:" + "1" * 60,
    ):
        with pytest.raises(Exception) as refused:
            read_button(forged)
        assert getattr(refused.value, "code", None) == "unknown_button", forged


def record_of(job_id: str, count: int, engines: list[str]) -> JobRecord:
    request = JobRequest(
        prompt="x",
        engines=engines,
        count=count,
        user="web:u",
        conversation=Conversation(platform="web", chat_id="c"),
    )
    results = [
        EngineResult(engine=e, version="v", seconds=0.1, image_keys=[f"k{i}" for i in range(count)])
        for e in engines
    ]
    return JobRecord(id=job_id, request=request, seed=1, steps=1, size=64, results=results)


@given(
    job_id=st.text("0123456789abcdef", min_size=16, max_size=16),
    count=st.integers(1, 16),
    engines=st.lists(st.sampled_from(KNOWN_ENGINES), min_size=1, max_size=3, unique=True),
)
def test_every_button_fits_telegram_and_reads_back_as_its_action(
    job_id: str, count: int, engines: list[str]
) -> None:
    record = record_of(job_id, count, engines)
    rows = result_buttons(record)
    for index in range(count):
        rows += picked_buttons(record, index)
    labels = [b.label for row in rows for b in row]
    assert ("U1" in labels) == (count > 1) and f"V{count}" in labels
    for row in rows:
        assert 1 <= len(row) <= 5
        for button in row:
            assert len(button.data.encode()) <= MAX_DATA_BYTES, button
            action = read_button(button.data)
            assert action.job_id == job_id
            kind, *rest = button.data.split(":")
            expected = {"u": Pick, "v": Vary, "rx": RemixAsk, "up": Upscale, "rr": Again, "i": JobInfo}[kind]
            assert type(action) is expected
            if rest[1:]:
                assert action.index == int(rest[1])  # type: ignore[union-attr]
            if kind == "up":
                assert action.engine == rest[2]  # type: ignore[union-attr]


@pytest.mark.timeout(600)
def test_the_command_line_shows_its_own_job_again(
    service: ConversationService, settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from bots.cli.conversation import cli_caller
    from worker.cli import app

    record = imagine(service, cli_caller(settings), "a white cloud --seed 4 --engine dfgan")
    monkeypatch.setenv("IMAGINEBOT_REDIS_URL", settings.redis_url or "")
    monkeypatch.setenv("IMAGINEBOT_DATA_DIR", str(settings.data_dir))
    out = tmp_path / "again.png"
    shown = CliRunner().invoke(app, ["show", record.id, "--out", str(out)], terminal_width=200)
    assert shown.exit_code == 0, shown.output
    assert record.pair_key is not None and out.read_bytes() == service.queue.images.get(record.pair_key)
    assert f"seed {record.seed}" in shown.output
    stranger = web_caller(service)
    theirs = imagine(service, stranger, "a black cat --engine dfgan")
    refused = CliRunner().invoke(app, ["show", theirs.id], terminal_width=200)
    assert refused.exit_code == 2 and NOT_THIS_CHAT_TEXT in refused.output


@pytest.mark.timeout(600)
def test_a_variation_keeps_the_pictures_shape(service: ConversationService) -> None:
    me = web_caller(service)
    wide = imagine(service, me, "a red boat --ar 16:9 --seed 2 --engine dfgan,diffusion")
    variation = drawn(service, service.handle(me, Vary(wide.id, 0)))
    assert variation.request.aspect == "16:9"
    for engine in ("dfgan", "diffusion"):
        shape = pixels(service, picture(wide, engine, 0)).shape
        assert shape[1] > shape[0], engine  # wide
        assert pixels(service, picture(variation, engine, 0)).shape == shape, engine


@given(
    data=st.text(max_size=80) | st.from_regex(r"(u|v|rx|up|rr|i|vd|st|ib):[0-9a-f]{16}(:[0-9a-z]{0,12}){0,3}")
)
def test_any_button_data_is_an_action_or_unknown_button(data: str) -> None:
    from core.errors import InputError

    try:
        action = read_button(data)
    except InputError as refused:
        assert refused.code == "unknown_button"
    else:
        assert len(data.encode()) <= MAX_DATA_BYTES and action.job_id in data


@given(text=st.text(max_size=60))
def test_show_reads_only_a_job_id(text: str) -> None:
    from core.errors import InputError

    try:
        shown = Show.from_text(text)
    except InputError as refused:
        assert refused.code == "bad_job_id"
    else:
        assert len(shown.job_id) == 16 and shown.job_id in text.lower()
