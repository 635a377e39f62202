"""R-precision: the scoring rule, and the shipped DAMSM encoders on real shapes images and noise."""

from __future__ import annotations

import random

import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from training.data.shapes import ShapesDataset, all_specs, parse_caption, render
from training.eval.r_precision import (
    image_features,
    load_matching_encoders,
    r_precision,
    r_precision_from_features,
    r_precision_of_generator,
    sentence_features,
    shapes_r_precision,
)
from training.text.damsm.checkpoint import MatchingEncoders, images_to_tensor

torch.set_num_threads(1)

POOL = [s.caption for s in all_specs()]


@pytest.fixture(scope="module")
def encoders() -> MatchingEncoders:
    return load_matching_encoders()


# --- the scoring rule on features -----------------------------------------------------------------


def test_features_equal_to_their_caption_score_one() -> None:
    captions = F.normalize(torch.randn(180, 32, generator=torch.Generator().manual_seed(0)), dim=1)
    true = torch.arange(500) % 180
    result = r_precision_from_features(captions[true], captions, true, candidates=100, seed=1)
    assert result["r_precision"] == 1.0 and result["r_precision_std"] == 0.0
    assert result["pool"] == 180 and result["images"] == 500 and result["chance"] == 0.01


def test_unrelated_features_score_about_chance() -> None:
    rng = torch.Generator().manual_seed(0)
    captions, images = torch.randn(180, 32, generator=rng), torch.randn(3000, 32, generator=rng)
    result = r_precision_from_features(images, captions, torch.arange(3000) % 180, candidates=100)
    assert 0.003 < result["r_precision"] < 0.025
    assert len(result["per_repeat"]) == 3


def test_true_caption_is_never_drawn_as_a_wrong_one() -> None:
    # Image n is caption n with a small push towards caption n+1. With all other 9 captions drawn
    # every time, a hit needs the true caption to beat the next one; it always does by construction.
    captions = F.normalize(torch.randn(10, 16, generator=torch.Generator().manual_seed(2)), dim=1)
    images = captions + 0.3 * captions.roll(-1, dims=0)
    result = r_precision_from_features(images, captions, torch.arange(10), candidates=10, repeats=5)
    assert result["r_precision"] == 1.0
    # Asking for more candidates than there are different captions is an error, not a silent repeat.
    with pytest.raises(ValueError, match="candidates"):
        r_precision_from_features(images, captions, torch.arange(10), candidates=11)


def test_candidate_draws_are_seeded() -> None:
    rng = torch.Generator().manual_seed(4)
    captions, images = torch.randn(50, 8, generator=rng), torch.randn(400, 8, generator=rng)
    true = torch.arange(400) % 50
    a = r_precision_from_features(images, captions, true, candidates=20, seed=7)
    b = r_precision_from_features(images, captions, true, candidates=20, seed=7)
    c = r_precision_from_features(images, captions, true, candidates=20, seed=8)
    assert a == b
    assert a["per_repeat"] != c["per_repeat"]


# --- the shipped encoders -------------------------------------------------------------------------


def test_shipped_encoders_rank_real_shapes_images_far_above_chance(encoders: MatchingEncoders) -> None:
    # Held-out renders: seed 777 jitters positions and sizes differently from the training set.
    data = ShapesDataset(count=360, seed=777)
    images = torch.stack([data[i][0] for i in range(len(data))])
    result = r_precision(images, data.captions, encoders, candidates=100, seed=0, pool=POOL)
    assert result["pool"] == 180
    assert result["r_precision"] > 0.5


def test_noise_images_score_about_chance(encoders: MatchingEncoders) -> None:
    noise = torch.rand(600, 3, 64, 64, generator=torch.Generator().manual_seed(0)) * 2 - 1
    captions = [POOL[i % 180] for i in range(600)]
    result = r_precision(noise, captions, encoders, candidates=100, pool=POOL)
    assert result["r_precision"] < 0.05


def test_captions_with_the_same_words_count_as_one(encoders: MatchingEncoders) -> None:
    data = ShapesDataset(count=20, seed=3)
    images = torch.stack([data[i][0] for i in range(20)])
    shouted = [c.upper() + "!" for c in POOL]  # same tokens as POOL: not "different" captions
    result = r_precision(images, data.captions, encoders, candidates=100, pool=POOL + shouted)
    assert result["pool"] == 180


def test_pil_images_give_the_same_features_as_tensors(encoders: MatchingEncoders) -> None:
    data = ShapesDataset(count=4, seed=9)
    tensors = torch.stack([data[i][0] for i in range(4)])
    pil = [Image.fromarray(data.images[i].permute(1, 2, 0).numpy()) for i in range(4)]
    torch.testing.assert_close(images_to_tensor(pil), tensors)
    torch.testing.assert_close(image_features(encoders, pil), image_features(encoders, tensors))


def test_generator_callable_is_scored_with_its_seeds(encoders: MatchingEncoders) -> None:
    seen: list[int] = []

    def renderer(captions: list[str], seeds: list[int]) -> list[Image.Image]:
        # A "generator" that draws exactly what it is asked for, jittered by the seed.
        seen.extend(seeds)
        return [render(parse_caption(c), 64, random.Random(s)) for c, s in zip(captions, seeds, strict=True)]

    result = shapes_r_precision(renderer, count=200, seed=50, encoders=encoders, batch_size=64)
    assert seen == list(range(50, 250))
    assert result["r_precision"] > 0.5 and result["pool"] == 180

    def blank(captions: list[str], seeds: list[int]) -> torch.Tensor:
        return torch.zeros(len(captions), 3, 64, 64)  # ignores the text entirely

    flat = r_precision_of_generator(blank, [POOL[i % 180] for i in range(400)], encoders, pool=POOL)
    assert flat["r_precision"] < 0.05


def test_sentence_features_are_unit_length(encoders: MatchingEncoders) -> None:
    feats = sentence_features(encoders, POOL[:5])
    torch.testing.assert_close(feats.norm(dim=1), torch.ones(5))
