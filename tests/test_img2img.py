"""Image-to-image in the diffusion engine, for real, on the tiny Stable Diffusion pipeline (diffusers'
image-to-image pipeline made with ``from_pipe``) and on our own pixel-space pipeline."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from tests.helpers.tiny_models import build_pixel_pipeline
from training.diffusion import build_tiny_pipeline
from worker.engines.base import GenerationRequest
from worker.engines.diffusion import DiffusionEngine, img2img_steps

STEPS = 4  # image-to-image at 0.5 runs 2 of them


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"), dtype=np.int16)


def start_picture(colour: tuple[int, int, int] = (230, 40, 40)) -> Image.Image:
    """A coloured disc on white: far from the noise a random model draws."""
    image = Image.new("RGB", (64, 64), (255, 255, 255))
    image.paste(colour, (16, 16, 48, 48))
    return image


@pytest.fixture(scope="module", params=["stable-diffusion", "pixel"])
def engine(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> DiffusionEngine:
    root = tmp_path_factory.mktemp("img2img")
    if request.param == "stable-diffusion":
        folder = build_tiny_pipeline(root / "tiny", seed=0)
    else:
        folder = build_pixel_pipeline(root / "pixel")
    return DiffusionEngine(str(folder), root, device="cpu")


def redraw(engine: DiffusionEngine, image: Image.Image | None, strength: float, seed: int = 5) -> Image.Image:
    request = GenerationRequest("a red circle", [seed], STEPS, 64, image=image, strength=strength)
    return engine.generate([request])[0][0]


def test_same_seed_image_and_strength_give_the_same_picture(engine: DiffusionEngine) -> None:
    first = pixels(redraw(engine, start_picture(), 0.6))
    again = pixels(redraw(engine, start_picture(), 0.6))
    assert first.shape == (64, 64, 3)
    assert np.array_equal(first, again)


def test_the_image_seed_and_strength_each_change_the_picture(engine: DiffusionEngine) -> None:
    base = pixels(redraw(engine, start_picture(), 0.6))
    other_image = pixels(redraw(engine, start_picture((40, 40, 230)), 0.6))
    other_seed = pixels(redraw(engine, start_picture(), 0.6, seed=6))
    other_strength = pixels(redraw(engine, start_picture(), 0.9))
    text_only = pixels(redraw(engine, None, 0.6))
    for different in (other_seed, other_strength, text_only):
        assert np.abs(base - different).mean() > 1
    # The tiny SD's random VAE maps every picture to nearly the same latent (~0.5 levels apart);
    # identical inputs are exactly equal (above), so any difference shows the image was used.
    assert np.abs(base - other_image).mean() > 0.2


def test_less_strength_stays_closer_to_the_image(engine: DiffusionEngine) -> None:
    if engine.info.extra["pipeline"] != "PixelDiffusionPipeline":
        pytest.skip("the tiny SD's random VAE decodes latents unrelated to the picture they encode")
    start = pixels(start_picture())
    light = np.abs(pixels(redraw(engine, start_picture(), 0.3)) - start).mean()
    heavy = np.abs(pixels(redraw(engine, start_picture(), 1.0)) - start).mean()
    assert light < heavy


def test_strength_zero_returns_the_picture(engine: DiffusionEngine) -> None:
    out = redraw(engine, start_picture().resize((100, 100)), 0.0)
    assert out.size == (64, 64)
    assert np.abs(pixels(out) - pixels(start_picture())).mean() < 3  # only the resize's rounding


def test_progress_counts_the_steps_image_to_image_runs(engine: DiffusionEngine) -> None:
    events: list[tuple[int, int]] = []
    requests = [
        GenerationRequest("a cat", [1], STEPS, 64, image=start_picture(), strength=0.5),
        GenerationRequest("a dog", [2], 2, 64),  # text-to-image: its own call
    ]
    out = engine.generate(requests, progress=lambda step, total: events.append((step, total)) or False)
    assert [len(images) for images in out] == [1, 1]
    total = img2img_steps(STEPS, 0.5) + 2
    assert events[-1] == (total, total)
    assert [step for step, _ in events] == sorted(step for step, _ in events)


def test_image_and_text_requests_in_one_batch_keep_their_pictures(engine: DiffusionEngine) -> None:
    alone = pixels(redraw(engine, start_picture(), 0.6))
    batch = engine.generate(
        [
            GenerationRequest("a red circle", [7], STEPS, 64),
            GenerationRequest("a red circle", [5], STEPS, 64, image=start_picture(), strength=0.6),
        ]
    )
    assert np.abs(pixels(batch[1][0]) - alone).max() <= 2


def test_the_image_to_image_pipeline_shares_the_weights(engine: DiffusionEngine) -> None:
    redraw(engine, start_picture(), 0.5)
    if engine.info.extra["pipeline"] == "PixelDiffusionPipeline":
        assert engine._img2img is None  # our pipeline draws from an image itself
    else:
        assert type(engine._img2img).__name__ == "StableDiffusionImg2ImgPipeline"
        assert engine._img2img.unet is engine.pipe.unet and engine._img2img.vae is engine.pipe.vae


def test_the_pair_says_text_only_for_an_engine_that_ignored_the_picture() -> None:
    from core.compose import Panel, compose_pair

    image = [start_picture()]
    plain = compose_pair([Panel("dfgan", "v1", 0.1, image)], "a cat", 1)
    noted = compose_pair([Panel("dfgan", "v1", 0.1, image, note="text only")], "a cat", 1)
    assert plain.size == noted.size
    assert np.abs(pixels(plain) - pixels(noted)).sum() > 0
