"""``--ar W:H``: the flag's parsing and messages, the width and height a job gets from its size, the
diffusion engines drawing that shape natively (our pixel pipeline and a Stable Diffusion one), DF-GAN
centre-cropping its squares (never stretching) and saying so, and a real worker drawing ``--ar 16:9``."""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np
import pytest
import redis
from PIL import Image, ImageOps

from core.aspect import MAX_RATIO, MAX_SIDE, MIN_RATIO, dimensions, fit_dimensions
from core.conversation import (
    ConversationService,
    FromText,
    Imagine,
    Queued,
    Refused,
    SettingsShown,
    UserSettings,
)
from core.conversation.replies import JobSettings
from core.embedded_redis import EmbeddedRedis
from core.errors import InputError
from core.fair_queue import batch_key_of
from core.job_client import QueueClient
from core.jobs import Conversation, JobRecord, JobRequest, JobStatus, LoraChoice
from core.pairs import CROPPED, note_for
from core.settings import Settings
from core.validation import request_from_text
from tests.helpers.databases import emptied_database
from tests.helpers.jobs import drawn_from_text
from tests.helpers.settings import make_settings
from tests.helpers.tiny_models import build_pixel_pipeline
from training.diffusion import build_tiny_pipeline
from worker.engines.base import GenerationRequest
from worker.engines.diffusion import DiffusionEngine

CONVERSATION = Conversation(platform="cli", chat_id="aspect")


def ask(text: str) -> JobRequest:
    return request_from_text(text, Settings(), "cli:aspect-tester", CONVERSATION)


@pytest.mark.parametrize(
    ("text", "aspect"),
    [
        ("a cat --ar 16:9", "16:9"),
        ("a cat --aspect 9:16", "9:16"),
        ("a cat --ar=32:18", "16:9"),  # lowest terms
        ("a cat --AR 4:3", "4:3"),
        ("a cat --ar 1:4", "1:4"),
        ("a cat --ar 4:1", "4:1"),
        ("a cat --ar 1:1", None),  # square is the default shape
        ("a cat --ar 3:3", None),
        ("a cat", None),
    ],
)
def test_good_aspects_are_recorded_in_lowest_terms(text: str, aspect: str | None) -> None:
    assert ask(text).aspect == aspect


@pytest.mark.parametrize(
    ("text", "code", "message"),
    [
        ("a cat --ar 16x9", "bad_aspect", "--ar must be two whole numbers as width:height, e.g. --ar 16:9"),
        ("a cat --ar wide", "bad_aspect", "not 'wide'"),
        ("a cat --ar 1.5:1", "bad_aspect", "two whole numbers"),
        ("a cat --ar -16:9", "bad_aspect", "two whole numbers"),
        ("a cat --ar 16:", "bad_aspect", "two whole numbers"),
        ("a cat --ar 0:9", "bad_aspect", "--ar sides must be above 0"),
        ("a cat --ar 16:0", "bad_aspect", "--ar sides must be above 0"),
        ("a cat --ar 5:1", "aspect_out_of_range", "--ar 5:1 is too wide: ratios from 1:4 (tall) to 4:1"),
        ("a cat --ar 10:2", "aspect_out_of_range", "--ar 5:1 is too wide"),
        ("a cat --ar 9:40", "aspect_out_of_range", "--ar 9:40 is too tall"),
        ("a cat --ar", "missing_value", "Option --ar needs a value, e.g. --ar 16:9."),
        ("a cat --ar 16:9 --aspect 4:3", "duplicate_flag", "is given twice"),
    ],
)
def test_bad_aspects_get_their_own_message(text: str, code: str, message: str) -> None:
    with pytest.raises(InputError) as caught:
        ask(text)
    assert caught.value.code == code
    assert message in caught.value.message


def test_the_help_names_the_flag() -> None:
    with pytest.raises(InputError) as caught:
        ask("a cat --shape 16:9")
    assert "--ar W:H" in caught.value.message


@pytest.mark.parametrize("size", Settings().sizes)
def test_every_ratio_keeps_the_pixel_budget_and_its_shape(size: int) -> None:
    """Every W:H with sides up to 40 that is allowed: sides multiples of 8 within the limit, the ratio
    within 7 %, about size² pixels (looser for the smallest size: an 8-pixel step is coarse there)."""
    low, high = (0.7, 1.6) if size < 128 else (0.8, 1.3)
    for w in range(1, 41):
        for h in range(1, 41):
            if not MIN_RATIO <= w / h <= MAX_RATIO:
                continue
            width, height = dimensions(size, f"{w}:{h}")
            assert width % 8 == 0 and height % 8 == 0 and max(width, height) <= MAX_SIDE
            assert abs(math.log(width / height / (w / h))) < 0.07, (w, h, width, height)
            assert low <= width * height / size**2 <= high, (w, h, width, height)
            assert (width > height) == (w > h) or abs(math.log(w / h)) < 0.07


def test_square_and_exact_shapes() -> None:
    assert dimensions(64, None) == (64, 64)
    assert dimensions(64, "16:9") == (88, 48)
    assert dimensions(256, "3:2") == (312, 208)
    assert dimensions(64, "1:4") == (32, 128)
    assert fit_dimensions(32, 16 / 9, multiple=4) == (44, 24)
    assert fit_dimensions(2048, 4.0)[0] <= MAX_SIDE


def test_a_record_gets_its_shape_from_size_and_aspect_and_old_records_stay_square() -> None:
    request = ask("a cat --ar 16:9 --size 128")
    record = JobRecord(request=request, seed=1, steps=2, size=128)
    assert (record.width, record.height) == dimensions(128, "16:9") == (168, 96)
    stored = record.model_dump(mode="json")
    assert JobRecord.model_validate(stored).width == 168
    del stored["width"], stored["height"]
    stored["request"].pop("aspect")  # a record written before aspect ratios
    old = JobRecord.model_validate(stored)
    assert (old.width, old.height) == (128, 128)
    # Jobs of different shapes are not drawn in one batch; square keys are as they were.
    square = JobRecord(request=ask("a cat --size 128"), seed=1, steps=2, size=128)
    assert batch_key_of(record) != batch_key_of(square)
    assert "shape" not in batch_key_of(square)
    text = JobSettings(record).text
    assert "size 128 · ar 16:9 (168×96)" in text
    assert "ar " not in JobSettings(square).text


def test_info_names_the_model_the_loras_and_the_strength_only_when_set() -> None:
    """ℹ️ Info reads back everything that was set: a job with a model, two LoRAs and a start picture
    says so; a plain job's text has none of those words."""
    plain = JobRecord(request=ask("a red circle"), seed=1, steps=2, size=64)  # (no automatic model)
    loras = [LoraChoice(name="ink", weight=0.8), LoraChoice(name="sketch", weight=1.0)]
    request = ask("a red circle --no blur").model_copy(
        update={"model": "anime", "loras": loras, "image_key": "upload:" + "a" * 32, "strength": 0.4}
    )
    text = JobSettings(JobRecord(request=request, seed=1, steps=2, size=64)).text
    assert text.endswith(
        "· no “blur” · model anime · lora ink:0.8 lora sketch:1 · from a picture at strength 0.4"
    ), text
    assert not any(word in JobSettings(plain).text for word in ("model", "lora", "strength", "no “"))


@pytest.fixture(scope="module")
def pixel_engine(tmp_path_factory: pytest.TempPathFactory) -> DiffusionEngine:
    folder = build_pixel_pipeline(tmp_path_factory.mktemp("pixel") / "pixel")
    return DiffusionEngine(str(folder), tmp_path_factory.mktemp("data"), device="cpu")


def test_our_pipeline_draws_the_shape_natively(pixel_engine: DiffusionEngine) -> None:
    pipe = pixel_engine.pipe
    seen: list[tuple[int, ...]] = []
    forward = pipe.unet.forward

    def spy(sample, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202 - a pass-through
        seen.append(tuple(sample.shape[-2:]))
        return forward(sample, *args, **kwargs)

    pipe.unet.forward = spy
    try:
        request = GenerationRequest("a red circle", seeds=[1, 2], steps=2, size=64, width=88, height=48)
        (wide,) = pixel_engine.generate([request])
        (square,) = pixel_engine.generate([GenerationRequest("a red circle", seeds=[1], steps=2, size=64)])
    finally:
        pipe.unet.forward = forward
    assert [image.size for image in wide] == [(88, 48), (88, 48)]
    assert square[0].size == (64, 64)
    # The UNet (16 px native, two levels) denoised a wide 22×12 picture, not a square it then stretched.
    native = pipe.native_dims(48, 88)
    assert native == (12, 22) and native in seen and (16, 16) in seen
    assert all(np.asarray(image).std() > 1 for image in wide)


def test_a_model_with_a_coarser_size_multiple_still_gives_the_exact_shape(
    pixel_engine: DiffusionEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pixel_engine, "size_multiple", 16)  # as Flux's packed latents need
    drawn = pixel_engine.image_dims((88, 48))
    assert drawn[0] % 16 == 0 and drawn[1] % 16 == 0 and drawn[0] > drawn[1]
    request = GenerationRequest("a red circle", seeds=[1], steps=2, size=64, width=88, height=48)
    (images,) = pixel_engine.generate([request])
    assert images[0].size == (88, 48)  # drawn at 16-multiples, then cropped to the job's shape
    monkeypatch.setattr(pixel_engine, "size_multiple", 8)
    assert pixel_engine.image_dims((88, 48)) == (88, 48)  # core's 8-multiples are drawn as they are


def test_our_pipeline_takes_a_start_picture_of_any_shape(pixel_engine: DiffusionEngine) -> None:
    start = Image.new("RGB", (80, 60), (200, 30, 30))
    request = GenerationRequest(
        "a red circle", seeds=[3], steps=4, size=64, width=48, height=88, image=start, strength=0.5
    )
    (images,) = pixel_engine.generate([request])
    assert images[0].size == (48, 88)


def test_a_stable_diffusion_pipeline_gets_height_and_width(tmp_path_factory: pytest.TempPathFactory) -> None:
    folder = build_tiny_pipeline(tmp_path_factory.mktemp("sd") / "tiny", seed=0)
    engine = DiffusionEngine(str(folder), tmp_path_factory.mktemp("data"), device="cpu")
    seen: list[tuple[int, ...]] = []
    forward = engine.pipe.unet.forward

    def spy(sample, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202 - a pass-through
        seen.append(tuple(sample.shape[-2:]))
        return forward(sample, *args, **kwargs)

    engine.pipe.unet.forward = spy
    request = GenerationRequest("a red circle", seeds=[1], steps=2, size=64, width=88, height=48)
    (images,) = engine.generate([request])
    assert images[0].size == (88, 48)
    scale = engine.pipe.vae_scale_factor
    assert seen and all(shape == (48 // scale, 88 // scale) for shape in seen)  # latents of that shape


def test_dfgan_crops_its_square_to_the_shape_and_never_stretches() -> None:
    from worker.engines.dfgan import DFGANEngine

    engine = DFGANEngine(None, "cpu")
    native = int(engine.info.extra["imsize"])
    (square,) = engine.generate([GenerationRequest("a red circle", seeds=[5], size=native)])
    (wide,) = engine.generate([GenerationRequest("a red circle", seeds=[5], size=64, width=88, height=48)])
    (tall,) = engine.generate([GenerationRequest("a red circle", seeds=[5], size=64, width=48, height=88)])
    assert wide[0].size == (88, 48) and tall[0].size == (48, 88)
    cropped = ImageOps.fit(square[0], (88, 48), Image.Resampling.LANCZOS)
    stretched = square[0].resize((88, 48), Image.Resampling.LANCZOS)
    diff = np.abs(np.asarray(wide[0], np.int16) - np.asarray(cropped, np.int16))
    assert diff.max() <= 2  # the same picture's middle band (a grey level of batch rounding)
    assert np.abs(np.asarray(wide[0], np.int16) - np.asarray(stretched, np.int16)).mean() > diff.mean()
    assert note_for(text_only=False, cropped=True) == CROPPED == "square model, cropped"
    assert note_for(text_only=True, cropped=True) == "text only · square model, cropped"


@pytest.fixture
def client(settings: Settings, celery_worker: object, clean_redis: redis.Redis) -> QueueClient:
    return QueueClient(settings)


def test_a_worker_draws_16_by_9(client: QueueClient) -> None:
    text = "a red circle --ar 16:9 --engine dfgan,diffusion --steps 3 --n 2 --seed 7"
    record = drawn_from_text(client, text, "cli:aspect-worker")
    assert record.status == JobStatus.DONE, record.error
    assert (record.width, record.height) == (88, 48)
    marks = {result.engine: result.cropped for result in record.results}
    assert marks == {"dfgan": True, "diffusion": False}
    for result in record.results:
        assert len(result.image_keys) == 2
        for key in result.image_keys:
            png = client.images.get(key)
            assert png is not None
            assert Image.open(io.BytesIO(png)).size == (88, 48)
    assert record.pair_key is not None
    pair = Image.open(io.BytesIO(client.images.get(record.pair_key) or b""))
    # Two engines side by side, each a 2×1 grid of 16:9 pictures 256 px high (469 px wide).
    assert pair.width >= 2 * (2 * 469 + 12) and pair.height < 2 * 256 + 200


@pytest.fixture
def service(redis_server: EmbeddedRedis, tmp_path: Path) -> ConversationService:
    url = emptied_database(redis_server, 16)  # no worker: jobs stay queued
    settings = make_settings(url, tmp_path, engines="dfgan")
    return ConversationService(settings, QueueClient(settings))


def test_settings_keep_a_default_aspect(service: ConversationService) -> None:
    me = service.caller("5", Conversation(platform="telegram", chat_id="500"))

    def drawn(prompt: str) -> JobRecord:
        queued = service.handle(me, Imagine.from_text(prompt))
        assert isinstance(queued, Queued), queued
        return queued.record

    shown = service.handle(me, FromText(UserSettings, "--ar 32:18"))
    assert isinstance(shown, SettingsShown) and shown.aspect == "16:9"
    assert "--n 1 --ar 16:9" in shown.text and shown.summary.endswith("ar 16:9")
    record = drawn("a red circle")
    assert (record.request.aspect, record.width, record.height) == ("16:9", 88, 48)
    assert drawn("a red circle --ar 1:1").width == 64  # the prompt's own --ar wins
    refused = service.handle(me, FromText(UserSettings, "--ar 9:1"))
    assert isinstance(refused, Refused) and refused.code == "aspect_out_of_range"
    assert "too wide" in refused.text
    assert drawn("a red circle").request.aspect == "16:9"  # the refused change stored nothing
    square = service.handle(me, FromText(UserSettings, "--ar 1:1"))
    assert isinstance(square, SettingsShown) and square.aspect is None and "--ar" not in square.text
    assert drawn("a red circle").width == 64
