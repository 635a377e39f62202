"""The shipped emoji DF-GAN (trained on the Noto emoji set): it loads, draws pictures of the right
shape, and draws different things for different captions; the emoji dataset's held-out split and
captions."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from training.shipped import SHIPPED_DIR

DFGAN_EMOJI = SHIPPED_DIR / "dfgan-emoji-64"
PROMPTS = ["a red apple", "a snowman"]


def _mean_abs_difference(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).abs().mean())


def test_shipped_emoji_dfgan_is_a_small_safetensors_file() -> None:
    path = DFGAN_EMOJI / "generator.safetensors"
    assert path.is_file() and path.stat().st_size < 15_000_000
    assert json.loads((DFGAN_EMOJI / "config.json").read_text())["version"].startswith("dfgan-emoji")


def test_shipped_emoji_dfgan_draws_what_the_caption_says() -> None:
    from training.dfgan.checkpoint import load_generator

    generator = load_generator(DFGAN_EMOJI, "cpu")
    images = generator.draw(PROMPTS, [0, 0])
    assert images.shape == (2, 3, 64, 64) and images.min() >= -1 and images.max() <= 1
    # Same noise, another caption: another picture (far more than float noise), and a red apple is
    # redder than a snowman.
    assert _mean_abs_difference(images[0], images[1]) > 0.05
    red = images[:, 0] - images[:, 1:].mean(dim=1)
    assert red[0].mean() > red[1].mean()
    assert torch.allclose(generator.draw(PROMPTS[:1], [0]), images[:1], atol=1e-4)  # seeded


def test_emoji_heldout_split_is_disjoint_from_training(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from training.data import emoji

    index = {"version": emoji.CACHE_VERSION, "items": []}
    cache = tmp_path / "datasets" / "emoji"
    cache.mkdir(parents=True)
    from PIL import Image

    for i in range(2 * emoji.HOLDOUT_EVERY):
        Image.new("RGBA", (8, 8)).save(cache / f"u{i}.png")
        index["items"].append({"file": f"u{i}.png", "codepoint": str(i), "captions": [f"thing {i}"]})
    (cache / "captions.json").write_text(json.dumps(index))
    train = {r.captions[0] for r in emoji.emoji_records(tmp_path, split="train")}
    heldout = {r.captions[0] for r in emoji.emoji_records(tmp_path, split="heldout")}
    every = {r.captions[0] for r in emoji.emoji_records(tmp_path, split="all")}
    assert len(heldout) == 2 and not train & heldout and train | heldout == every
    assert "thing 19" in heldout and "thing 0" in train


def test_emoji_captions_use_the_cldr_name_first() -> None:
    from training.data.emoji import emoji_captions, heldout_captions

    captions = emoji_captions("\U0001f355")  # SLICE OF PIZZA; CLDR: pizza (with the emoji package)
    assert captions[1:3] == [f"a {captions[0]}", f"{captions[0]} emoji"] and "slice of pizza" in captions
    assert not set(heldout_captions("\U0001f355")) & set(captions)


def test_emoji_eval_tells_copies_and_hits_from_blobs() -> None:
    from training.eval.emoji_eval import neighbour_check, retrieval_accuracy

    real = torch.rand(60, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
    real[5] = real[4] * 0.98  # like the emoji set, two training pictures nearly alike
    items = [0, 1, 2, 3]  # training emoji (index 19 and 39 are held out)
    copies = real[items].clone()
    grey = torch.zeros(4, 3, 32, 32)
    assert retrieval_accuracy(copies, items, real, candidates=20) == 1.0
    assert retrieval_accuracy(grey, items, real, candidates=20) < 0.5
    copied = neighbour_check(copies, items, real)
    assert copied["copies"] == 1.0 and copied["nearest_is_prompted"] == 1.0
    blobs = neighbour_check(grey, items, real)
    assert blobs["copies"] == 0.0 and blobs["drawn_to_nearest_train_rmse"] > 0.1
