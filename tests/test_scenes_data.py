"""Compositional scenes (one or two shapes and a relation) and their exact checker."""

from __future__ import annotations

import random

import numpy as np
import pytest
from PIL import Image

from training.data import get_dataset
from training.data.scenes import (
    INVERSE,
    RELATIONS,
    SceneObject,
    SceneSpec,
    answer_key,
    check_scene,
    make_scenes,
    parse_scene_caption,
    read_objects,
    render_scene,
    scene_scores,
)
from training.data.shapes import COLOURS, ShapeSpec, check_image


def test_answer_key_is_fixed_and_split_half_single_half_pair() -> None:
    key = answer_key(1000)
    assert [c for _, c in key] == [c for _, c in answer_key(1000)]
    assert sum(not s.is_pair for s, _ in key) == 500
    assert all(s.is_pair for s, _ in key[500:])
    assert len({c for _, c in key}) > 700  # varied, not one caption repeated
    # every relation and every colour occurs among the pairs
    assert {s.relation for s, _ in key[500:]} == set(RELATIONS)
    assert {o.colour for s, _ in key[500:] for o in s.objects} == set(COLOURS)


@pytest.mark.parametrize("imsize", [64, 128])
def test_checker_reads_back_rendered_answer_key(imsize: int) -> None:
    rng = random.Random(5)
    key = answer_key(1000)
    images = [render_scene(s, imsize, rng) for s, _ in key]
    scores = scene_scores(images, [c for _, c in key])
    assert scores["single_all"] == 1.0
    assert scores["pair_all"] == 1.0
    assert scores["all"] == 1.0


def test_checker_survives_the_diffusion_models_32px_round_trip() -> None:
    rng = random.Random(6)
    key = answer_key(200)
    images = [
        render_scene(s, 64, rng).resize((32, 32), Image.BICUBIC).resize((64, 64), Image.BICUBIC)
        for s, _ in key
    ]
    assert scene_scores(images, [c for _, c in key])["all"] >= 0.98


def test_noise_and_blank_images_score_zero() -> None:
    key = answer_key(200)
    captions = [c for _, c in key]
    gen = np.random.default_rng(0)
    uniform = [Image.fromarray(gen.integers(0, 256, (64, 64, 3), dtype=np.uint8)) for _ in captions]
    grey = np.clip(150 + 60 * gen.standard_normal((len(captions), 64, 64, 3)), 0, 255).astype(np.uint8)
    blank = [Image.new("RGB", (64, 64), (150, 150, 150))] * len(captions)
    for images in (uniform, [Image.fromarray(a) for a in grey], blank):
        scores = scene_scores(images, captions)
        assert scores["single_all"] <= 0.02 and scores["pair_all"] <= 0.02, scores


def test_swapped_relation_and_wrong_attributes_are_caught_separately() -> None:
    a, b = SceneObject("red", "circle", "small"), SceneObject("blue", "square", "large")
    image = render_scene(SceneSpec((a, b), relation="above"), 64)
    assert all(check_scene(image, "a small red circle above a large blue square").values())
    # the same picture said the other way round
    assert all(check_scene(image, "a large blue square below a small red circle").values())
    assert check_scene(image, "a small red circle below a large blue square") == {
        "colour": True,
        "shape": True,
        "size": True,
        "relation": False,
    }
    assert not check_scene(image, "a small red triangle above a large blue square")["shape"]
    assert not check_scene(image, "a large red circle above a large blue square")["size"]
    assert not any(check_scene(image, "a small green circle above a large blue square").values())
    # an unnamed size is not held against the picture
    assert all(check_scene(image, "a red circle above a blue square").values())


@pytest.mark.parametrize("relation", list(RELATIONS))
def test_every_relation_reads_back_both_ways(relation: str) -> None:
    a, b = SceneObject("green", "triangle", "large"), SceneObject("yellow", "square", "small")
    image = render_scene(SceneSpec((a, b), relation=relation), 64)
    assert all(check_scene(image, f"a green triangle {relation} a yellow square").values())
    assert all(check_scene(image, f"a yellow square {INVERSE[relation]} a green triangle").values())
    wrong = next(r for r in RELATIONS if r != relation)
    assert not check_scene(image, f"a green triangle {wrong} a yellow square")["relation"]


def test_caption_phrasings_parse_to_the_same_scene() -> None:
    spec = SceneSpec(
        (SceneObject("red", "circle", "small"), SceneObject("blue", "square", "large")), relation="above"
    )
    for phrasing in range(3):
        caption = spec.caption(phrasing)
        parsed = parse_scene_caption(caption)
        if phrasing == 1:  # said the other way round
            assert parsed.objects == spec.objects[::-1] and parsed.relation == "below", caption
        else:
            assert parsed == spec, caption
    assert parse_scene_caption("a green triangle left of a yellow square").relation == "to the left of"
    assert parse_scene_caption("a green triangle left of a yellow square").objects[0].size is None
    one = SceneSpec.single(ShapeSpec("red", "circle", "small", "on the left"))
    assert {parse_scene_caption(one.caption(p)) for p in range(3)} == {one}
    for bad in ("a circle above a blue square", "a red circle above a blue", "a red circle on the left"):
        with pytest.raises(ValueError):
            parse_scene_caption(bad)


def test_single_object_scenes_agree_with_the_shapes_checker() -> None:
    rng = random.Random(9)
    for spec, caption in make_scenes(300, seed=4, pair_fraction=0.0):
        image = render_scene(spec, 64, rng)
        (obj,) = spec.objects
        plain = f"a {obj.size} {obj.colour} {obj.shape} {spec.position}"
        assert all(check_image(image, plain).values())
        assert all(check_scene(image, caption).values())
        (seen,) = read_objects(image)
        assert (seen.colour, seen.shape, seen.size, seen.position) == (
            obj.colour,
            obj.shape,
            obj.size,
            spec.position,
        )


def test_dataset_is_deterministic_mixed_and_normalised() -> None:
    first = get_dataset("scenes", count=400, imsize=64, seed=3)
    again = get_dataset("scenes", count=400, imsize=64, seed=3)
    assert first.captions == again.captions
    assert bool((first.images == again.images).all())
    pairs = sum(s.is_pair for s in first.specs)
    assert 120 < pairs < 280
    image, caption = first[0]
    assert image.shape == (3, 64, 64) and -1.0 <= float(image.min()) and float(image.max()) <= 1.0
    assert caption == first.captions[0]
    # the pictures are what their captions say
    scores = scene_scores(
        [Image.fromarray(a) for a in first.images.permute(0, 2, 3, 1).numpy()], first.captions
    )
    assert scores["all"] == 1.0
