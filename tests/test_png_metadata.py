"""Every stored PNG says how it was drawn: the AUTOMATIC1111 ``parameters`` chunk other tools read and
our ``imaginebot`` JSON chunk, read back with :func:`core.png_metadata.read_parameters` — on PNGs made
here and on the ones a real worker stored."""

from __future__ import annotations

import io

import pytest
import redis
from PIL import Image

from core.compose import to_png
from core.job_client import QueueClient
from core.jobs import Conversation, EngineResult, JobRecord, JobRequest, JobStatus, LoraChoice
from core.png_metadata import (
    IMAGINEBOT_CHUNK,
    PARAMETERS_CHUNK,
    pair_parameters,
    parse_a1111,
    picture_parameters,
    read_parameters,
)
from core.settings import Settings
from tests.helpers.jobs import drawn_from_text


def record_of(prompt: str, negative: str | None = None, **request: object) -> JobRecord:
    job = JobRequest(
        prompt=prompt,
        engines=["dfgan", "diffusion"],
        count=2,
        negative_prompt=negative,
        user="cli:png",
        conversation=Conversation(platform="cli", chat_id="png"),
        **request,  # type: ignore[arg-type]
    )
    return JobRecord(request=job, seed=42, steps=20, size=64)


def test_a_picture_round_trips_in_the_a1111_format() -> None:
    record = record_of("a red circle", "blurry", aspect="16:9")
    result = EngineResult(engine="diffusion", version="diffusion-shapes-32-v1", seconds=1.0, image_keys=[])
    image = Image.new("RGB", (88, 48), "red")
    png = to_png(image, picture_parameters(record, result, 1, image))
    with Image.open(io.BytesIO(png)) as opened:
        text = opened.info[PARAMETERS_CHUNK]
        assert IMAGINEBOT_CHUNK in opened.info
    assert text == (  # A1111 quotes a value with a colon or comma
        "a red circle\nNegative prompt: blurry\n"
        'Steps: 20, Seed: 43, Size: 88x48, Model: diffusion-shapes-32-v1, Engine: diffusion, Aspect: "16:9"'
    )
    read = read_parameters(png)
    assert read["prompt"] == "a red circle" and read["negative_prompt"] == "blurry"
    assert (read["Steps"], read["Seed"], read["Size"], read["Engine"]) == ("20", "43", "88x48", "diffusion")
    extra = read["imaginebot"]
    assert extra["index"] == 1 and extra["seed"] == 43 and (extra["width"], extra["height"]) == (88, 48)
    assert extra["aspect"] == "16:9" and extra["cropped"] is False


def test_awkward_text_survives() -> None:
    prompt = 'a "quoted" cat, on a mat: 猫 🐱\nsecond line'
    record = record_of(prompt, "Steps: 3, Seed: 1, Size: 1x1", loras=[LoraChoice(name="ink", weight=0.5)])
    result = EngineResult(engine="dfgan", version="v, odd: name", seconds=0.1, image_keys=[], cropped=True)
    image = Image.new("RGB", (64, 64))
    read = read_parameters(to_png(image, picture_parameters(record, result, 0, image)))
    assert read["prompt"] == prompt
    assert read["negative_prompt"] == "Steps: 3, Seed: 1, Size: 1x1"
    assert read["Model"] == "v, odd: name" and read["Lora"] == "ink:0.5" and read["Seed"] == "42"
    assert read["imaginebot"]["cropped"] is True


def test_a_png_without_metadata_reads_as_nothing() -> None:
    assert read_parameters(to_png(Image.new("RGB", (8, 8)))) == {}
    # Text another tool wrote without a settings line is all prompt.
    assert parse_a1111("just a prompt") == ("just a prompt", None, {})


def test_the_pair_names_every_engine_and_the_job() -> None:
    record = record_of("a red circle")
    results = [
        EngineResult(engine="dfgan", version="dfgan-v1", seconds=0.1, image_keys=[]),
        EngineResult(engine="diffusion", version="diffusion-v2", seconds=1.0, image_keys=[]),
    ]
    read = read_parameters(to_png(Image.new("RGB", (32, 32)), pair_parameters(record, results)))
    assert read["Model"] == "dfgan-v1, diffusion-v2" and read["Engine"] == "dfgan, diffusion"
    assert read["Batch size"] == "2" and read["imaginebot"]["job_id"] == record.id
    assert read["imaginebot"]["seeds"] == [42, 43]


@pytest.fixture
def client(settings: Settings, celery_worker: object, clean_redis: redis.Redis) -> QueueClient:
    return QueueClient(settings)


def test_every_png_a_worker_stores_carries_its_parameters(client: QueueClient) -> None:
    text = 'a blue square --no "red circle" --engine dfgan,diffusion --steps 3 --n 2 --seed 100 --ar 3:2'
    record = drawn_from_text(client, text, "cli:png-worker")
    assert record.status == JobStatus.DONE, record.error
    for result in record.results:
        for index, key in enumerate(result.image_keys):
            read = read_parameters(client.images.get(key) or b"")
            assert read["prompt"] == "a blue square" and read["negative_prompt"] == "red circle"
            assert read["Steps"] == "3" and read["Seed"] == str(100 + index)
            assert read["Size"] == "72x48" and read["Aspect"] == "3:2"
            assert read["Model"] == result.version and read["Engine"] == result.engine
            assert read["imaginebot"]["cropped"] is (result.engine == "dfgan")
    assert record.pair_key is not None
    pair = read_parameters(client.images.get(record.pair_key) or b"")
    assert pair["imaginebot"]["job_id"] == record.id and pair["Seed"] == "100"
    assert pair["Engine"] == "dfgan, diffusion"
