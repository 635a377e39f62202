"""The procedural shapes dataset and its exact answer key."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from PIL import Image

from training.data import dataset_names, get_dataset
from training.data.shapes import (
    COLOURS,
    POSITIONS,
    SHAPES,
    SIZES,
    ShapeSpec,
    all_specs,
    check_image,
    parse_caption,
    read_image,
    render,
)


@pytest.mark.parametrize("imsize", [64, 128])
def test_checker_reads_back_every_rendered_combination(imsize: int) -> None:
    rng = random.Random(7)
    for spec in all_specs():
        image = render(spec, imsize, rng)
        assert read_image(image) == spec, spec.caption
        assert all(check_image(image, spec.caption).values()), spec.caption


def _other(options: list[str] | tuple[str, ...], current: str) -> str:
    return next(o for o in options if o != current)


def test_checker_rejects_each_wrong_attribute_separately() -> None:
    rng = random.Random(3)
    for spec in all_specs()[::7]:
        image = render(spec, 64, rng)
        for attribute, options in [
            ("colour", list(COLOURS)),
            ("shape", SHAPES),
            ("size", SIZES),
            ("position", list(POSITIONS)),
        ]:
            wrong = ShapeSpec(**{**spec.__dict__, attribute: _other(options, getattr(spec, attribute))})
            result = check_image(image, wrong.caption)
            assert result[attribute] is False, (spec.caption, wrong.caption)
            assert all(v for k, v in result.items() if k != attribute), (spec.caption, wrong.caption)


def test_blank_image_shows_nothing() -> None:
    blank = Image.new("RGB", (64, 64), "white")
    assert read_image(blank) is None
    assert not any(check_image(blank, "a small red circle on the left").values())


def test_caption_parsing() -> None:
    spec = parse_caption("A large green triangle on the left")
    assert spec == ShapeSpec("green", "triangle", "large", "on the left")
    with pytest.raises(ValueError):
        parse_caption("a green triangle on the left")  # no size
    with pytest.raises(ValueError):
        parse_caption("a large red green circle in the center")  # two colours


def test_dataset_is_deterministic_balanced_and_normalised() -> None:
    a = get_dataset("shapes", None, imsize=64, count=360, seed=5)
    b = get_dataset("shapes", None, imsize=64, count=360, seed=5)
    c = get_dataset("shapes", None, imsize=64, count=360, seed=6)
    assert torch.equal(a.images, b.images) and a.captions == b.captions
    assert not torch.equal(a.images, c.images)
    # Two full passes over the 180 combinations: every caption exactly twice.
    assert set(np.unique(a.captions, return_counts=True)[1]) == {2}
    image, caption = a[0]
    assert image.shape == (3, 64, 64) and image.min() >= -1 and image.max() <= 1
    assert all(
        check_image(Image.fromarray(a.images[i].permute(1, 2, 0).numpy()), a.captions[i])["shape"]
        for i in range(len(a))
    )


def test_unknown_dataset_name_is_refused() -> None:
    assert "shapes" in dataset_names()
    with pytest.raises(ValueError, match="unknown dataset"):
        get_dataset("../etc/passwd")
