"""The diffusion engine, run for real on tiny random pipelines built from configs (no hub access):
a Stable Diffusion pipeline (tokenizer made here) and our own pixel-space pipeline."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import training.diffusion.tiny as tiny
import worker.engines.diffusion as diffusion_engine
from core.compose import WITHHELD, Panel, compose_pair
from tests.helpers.tiny_models import build_checked_pipeline, build_pixel_pipeline
from training.diffusion import TINY_VERSION, build_tiny_pipeline, ensure_tiny_pipeline
from worker.engines.base import GenerationCancelled, GenerationRequest
from worker.engines.diffusion import DiffusionEngine, ModelNotAvailable

STEPS = 3  # enough for a multistep scheduler to take several model calls, cheap on a CPU


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image, dtype=np.int16)


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_pipeline(tmp_path_factory.mktemp("diffusion") / "tiny", seed=0)


@pytest.fixture(scope="module")
def pixel_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_pixel_pipeline(tmp_path_factory.mktemp("pixel") / "pixel")


@pytest.fixture(scope="module", params=["stable-diffusion", "pixel"])
def engine(
    request: pytest.FixtureRequest,
    tiny_folder: Path,
    pixel_folder: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> DiffusionEngine:
    # A folder path goes through the same from_pretrained(local_files_only) code as any real model.
    folder = tiny_folder if request.param == "stable-diffusion" else pixel_folder
    return DiffusionEngine(str(folder), tmp_path_factory.mktemp("data"), device="cpu")


def draw(engine: DiffusionEngine, prompt: str, seeds: list[int], **kw: object) -> list[Image.Image]:
    return engine.generate([GenerationRequest(prompt=prompt, seeds=seeds, steps=STEPS, **kw)])[0]


def test_tiny_pipeline_is_small_safetensors_with_version(tiny_folder: Path) -> None:
    files = [p for p in tiny_folder.rglob("*") if p.is_file()]
    assert sum(p.stat().st_size for p in files) < 10 * 1024 * 1024
    assert any(p.suffix == ".safetensors" for p in files)
    assert not any(p.suffix in (".bin", ".pt", ".pth", ".ckpt") for p in files)
    assert (tiny_folder / "tokenizer" / "vocab.json").is_file()
    assert (tiny_folder / "tokenizer" / "merges.txt").is_file()


def test_engine_reports_version_from_imaginebot_json(engine: DiffusionEngine) -> None:
    assert engine.info.name == "diffusion"
    if engine.info.extra["pipeline"] == "StableDiffusionPipeline":
        assert engine.info.version == TINY_VERSION
    else:  # our own class, loaded by name from model_index.json (AutoPipeline does not know it)
        assert engine.info.extra["pipeline"] == "PixelDiffusionPipeline"
        assert engine.info.version == "pixel-tiny-test"


def test_images_have_requested_size_and_are_not_blank(engine: DiffusionEngine) -> None:
    (image,) = draw(engine, "a red circle", [7])
    assert image.size == (64, 64) and image.mode == "RGB"
    assert pixels(image).std() > 1


def test_same_seed_same_image_different_seed_different_image(engine: DiffusionEngine) -> None:
    first = pixels(draw(engine, "a red circle", [1])[0])
    again = pixels(draw(engine, "a red circle", [1])[0])
    other = pixels(draw(engine, "a red circle", [2])[0])
    assert np.array_equal(first, again)
    assert np.abs(first - other).mean() > 10


def test_seed_gives_same_image_alone_or_in_a_batch(engine: DiffusionEngine) -> None:
    alone = pixels(draw(engine, "a blue square", [42])[0])
    batch = engine.generate(
        [
            GenerationRequest(prompt="a green triangle", seeds=[3, 4], steps=STEPS),
            GenerationRequest(prompt="a blue square", seeds=[5, 42], steps=STEPS),
        ]
    )
    assert [len(images) for images in batch] == [2, 2]
    batched = pixels(batch[1][1])
    # Batched convolutions sum in a different order on a CPU: allow a 1-2 level rounding difference,
    # far below the difference between seeds checked above.
    assert np.abs(alone - batched).max() <= 2
    assert np.abs(alone - batched).mean() < 0.05


def test_progress_steps_increase_over_all_groups(engine: DiffusionEngine) -> None:
    events: list[tuple[int, int]] = []
    requests = [
        GenerationRequest(prompt="a cat", seeds=[1], steps=2, size=64),
        GenerationRequest(prompt="a dog", seeds=[2], steps=3, size=32),  # other size: a second call
    ]
    images = engine.generate(requests, progress=lambda step, total: events.append((step, total)) or False)
    assert [image.size for (image,) in images] == [(64, 64), (32, 32)]
    assert events == [(1, 5), (2, 5), (3, 5), (4, 5), (5, 5)]


@pytest.mark.parametrize("pipeline_can_interrupt", [True, False])
def test_cancel_stops_at_the_step_it_was_asked(
    engine: DiffusionEngine, pipeline_can_interrupt: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not pipeline_can_interrupt:
        # Like a pipeline class without the ``interrupt`` property: the engine must stop it by raising.
        monkeypatch.setattr(type(engine.pipe), "interrupt", False)
    calls: list[int] = []
    unet_calls: list[int] = []
    hook = engine.pipe.unet.register_forward_hook(lambda *_: unet_calls.append(1))
    try:
        with pytest.raises(GenerationCancelled):
            engine.generate(
                [GenerationRequest(prompt="a cat", seeds=[1, 2], steps=6)],
                progress=lambda step, total: calls.append(step) or step == 2,
            )
    finally:
        hook.remove()
    assert calls == [1, 2]
    assert len(unet_calls) == 2  # the other 4 denoising steps never ran
    # The engine is still usable after a cancelled run.
    assert len(draw(engine, "a cat", [1])) == 1


def test_negative_prompt_is_used(engine: DiffusionEngine) -> None:
    # Guidance scales the (prompt - negative) difference; 5 makes it visible with random weights.
    plain = pixels(draw(engine, "a flower", [9], guidance_scale=5.0)[0])
    negative = pixels(draw(engine, "a flower", [9], negative_prompt="blurry dark", guidance_scale=5.0)[0])
    assert negative.shape == plain.shape
    assert np.abs(plain - negative).mean() > 0.5


def test_sizes_are_rounded_to_a_multiple_of_eight(engine: DiffusionEngine) -> None:
    assert engine.image_size(64) == 64
    assert engine.image_size(70) == 72
    assert engine.image_size(1) == 8
    assert engine.image_size(100_000) == 2048
    (image,) = draw(engine, "a star", [1], size=44)
    assert image.size == (48, 48)  # halfway rounds up


def test_request_without_seeds_gets_no_images(engine: DiffusionEngine) -> None:
    out = engine.generate(
        [GenerationRequest(prompt="a cat", seeds=[], steps=STEPS), GenerationRequest("a dog", [1], STEPS)]
    )
    assert len(out[0]) == 0 and len(out[1]) == 1


def test_uncached_hub_id_says_how_to_download(tmp_path: Path) -> None:
    with pytest.raises(ModelNotAvailable) as err:
        DiffusionEngine("imaginebot-tests/no-such-model-anywhere", tmp_path, device="cpu")
    message = str(err.value)
    assert "hf download imaginebot-tests/no-such-model-anywhere --local-dir" in message
    assert "IMAGINEBOT_DIFFUSION_MODEL" in message


def test_folder_that_is_not_a_pipeline_is_refused(tmp_path: Path) -> None:
    (tmp_path / "junk").mkdir()
    with pytest.raises(ModelNotAvailable, match="not a diffusers pipeline folder"):
        DiffusionEngine(str(tmp_path / "junk"), tmp_path, device="cpu")


def test_default_model_is_built_once_even_when_another_process_wins(
    tmp_path: Path, tiny_folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "models" / "diffusion-tiny"
    real_build = tiny.build_tiny_pipeline

    def build_then_lose_the_race(out_dir: Path, seed: int = 0, sample_size: int = 64) -> Path:
        real_build(out_dir, seed, sample_size)
        shutil.copytree(out_dir, target)  # another worker renamed its copy into place first
        (target / "marker").write_text("theirs")
        return out_dir

    monkeypatch.setattr(tiny, "build_tiny_pipeline", build_then_lose_the_race)
    assert ensure_tiny_pipeline(tmp_path) == target
    assert (target / "marker").is_file()  # theirs was kept, not overwritten
    assert [p.name for p in (tmp_path / "models").iterdir()] == ["diffusion-tiny"]  # no temp left

    # Same seed, same bytes: the race's build equals the module's own build.
    for name in ("unet/diffusion_pytorch_model.safetensors", "text_encoder/model.safetensors"):
        assert (target / name).read_bytes() == (tiny_folder / name).read_bytes()

    monkeypatch.setattr(tiny, "build_tiny_pipeline", lambda *a, **k: pytest.fail("rebuilt"))
    # Without the shipped model the default is the tiny one, and it is not rebuilt.
    monkeypatch.setattr(diffusion_engine, "SHIPPED_PIPELINE", tmp_path / "no-shipped-model")
    engine = DiffusionEngine(None, tmp_path, device="cpu")
    assert engine.info.version == TINY_VERSION


@pytest.mark.parametrize("model", ["./no-such-folder", "/srv/models/missing", "runs/x/pipeline", "~/sd"])
def test_missing_folder_is_named_not_treated_as_a_hub_id(tmp_path: Path, model: str) -> None:
    with pytest.raises(ModelNotAvailable, match="folder .* does not exist") as err:
        DiffusionEngine(model, tmp_path, device="cpu")
    assert "hf download" not in str(err.value)


@pytest.fixture(scope="module")
def folder_with_safety_checker(tiny_folder: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_checked_pipeline(tiny_folder, tmp_path_factory.mktemp("checked") / "sd-with-checker")


@pytest.mark.parametrize("use_checker", [True, False])
def test_safety_checker_follows_the_setting(
    folder_with_safety_checker: Path, tmp_path: Path, use_checker: bool
) -> None:
    engine = DiffusionEngine(
        str(folder_with_safety_checker), tmp_path, device="cpu", safety_checker=use_checker
    )
    assert engine.safety_checker is use_checker
    assert (engine.pipe.safety_checker is not None) is use_checker
    (images,) = engine.generate([GenerationRequest("a red circle", seeds=[1, 2], steps=2)])
    if use_checker:  # flagged: blacked out by the pipeline, counted, and marked for the label
        assert all(pixels(image).max() == 0 for image in images)
        assert engine.flagged_images == 2
        assert all(image.info[WITHHELD] == "safety checker" for image in images)
        pair = pixels(compose_pair([Panel("diffusion", "v", 0.1, images)], "a red circle", 1))
        tile = pair[12 + 44 : 12 + 44 + 256, 12 : 12 + 256]
        assert tile.max() > 200  # the reason is written over the black square
    else:
        assert all(pixels(image).std() > 1 for image in images)
        assert engine.flagged_images == 0
