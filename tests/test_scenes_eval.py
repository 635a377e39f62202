"""`eval` / `eval-diffusion --dataset scenes`: the scenes answer key scored end to end."""

from __future__ import annotations

import json
import random
from pathlib import Path

from PIL import Image
from typer.testing import CliRunner

from training.data.scenes import SceneObject, SceneSpec, parse_scene_caption, render_scene
from training.eval.attributes import draw_scene_captions, scenes_attribute_accuracy

SCENE_KEYS = {
    *(f"single_{k}" for k in ("colour", "shape", "size", "position", "all")),
    *(f"pair_{k}" for k in ("colour", "shape", "size", "relation", "all")),
    "all",
}


def _perfect(captions: list[str], seeds: list[int]) -> list[Image.Image]:
    """Draws exactly what each caption says (an unnamed size drawn small)."""
    out = []
    for caption, seed in zip(captions, seeds, strict=True):
        spec = parse_scene_caption(caption)
        objects = tuple(SceneObject(o.colour, o.shape, o.size or "small") for o in spec.objects)
        out.append(render_scene(SceneSpec(objects, spec.position, spec.relation), 64, random.Random(seed)))
    return out


def test_a_perfect_generator_scores_one_and_a_blank_one_zero() -> None:
    perfect = scenes_attribute_accuracy(_perfect, count=120, seed=3, batch_size=50)
    assert perfect.keys() == SCENE_KEYS
    assert all(v == 1.0 for v in perfect.values()), perfect
    blank = scenes_attribute_accuracy(
        lambda captions, seeds: [Image.new("RGB", (64, 64), (150, 150, 150))] * len(captions),
        count=120,
        seed=3,
    )
    assert all(v == 0.0 for v in blank.values()), blank


def test_the_answer_key_draws_with_one_seed_per_image() -> None:
    seen: list[int] = []

    def record(captions: list[str], seeds: list[int]) -> list[Image.Image]:
        seen.extend(seeds)
        return _perfect(captions, seeds)

    _, captions = draw_scene_captions(record, count=30, seed=100, batch_size=8)
    assert seen == list(range(100, 130)) and len(captions) == 30


def test_eval_scores_the_shipped_dfgan_on_scenes(tmp_path: Path) -> None:
    from training.cli import app

    out, grid = tmp_path / "scores.json", tmp_path / "grid.png"
    args = ["eval", "--dataset", "scenes", "--count", "20", "--device", "cpu", "--json", str(out)]
    result = CliRunner().invoke(app, [*args, "--grid", str(grid)])
    assert result.exit_code == 0, result.output
    scores = json.loads(out.read_text())
    assert scores["dataset"] == "scenes" and scores["count"] == 20
    assert SCENE_KEYS <= scores.keys()
    # the shipped model draws one shape well: at least its colour is read back
    assert scores["single_colour"] > 0.5
    assert Image.open(grid).size[0] > 64
    refused = CliRunner().invoke(app, ["eval", "--dataset", "coco", "--count", "2"])
    assert refused.exit_code != 0 and "exact answer key" in refused.output


def test_eval_diffusion_scores_scenes_and_refuses_other_datasets(tmp_path: Path) -> None:
    from worker.cli import app

    out = tmp_path / "scores.json"
    args = ["eval-diffusion", "--dataset", "scenes", "--count", "4", "--steps", "2", "--threads", "1"]
    result = CliRunner().invoke(app, [*args, "--device", "cpu", "--json", str(out)])
    assert result.exit_code == 0, result.output
    scores = json.loads(out.read_text())
    assert scores["dataset"] == "scenes" and SCENE_KEYS <= scores.keys()
    refused = CliRunner().invoke(app, ["eval-diffusion", "--dataset", "emoji", "--count", "2"])
    assert refused.exit_code != 0 and "exact answer key" in refused.output
