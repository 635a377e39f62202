"""Training the pixel-space diffusion model: a few real optimiser steps of a tiny UNet on shapes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from rich.console import Console
from safetensors.torch import load_file

from training.data.shapes import ShapesDataset
from training.diffusion.config import DiffusionConfig
from training.diffusion.trainer import export_pipeline, train
from worker.engines.base import GenerationRequest
from worker.engines.diffusion import DiffusionEngine


def tiny_config(**overrides: object) -> DiffusionConfig:
    values: dict[str, object] = {
        "imsize": 16,
        "source_size": 32,
        "block_out_channels": (8, 16),
        "attention_levels": (False, True),
        "norm_num_groups": 4,
        "attention_head_dim": 4,
        "batch_size": 4,
        "checkpoint_every": 2,
        "warmup_steps": 1,
        "sample_prompts": ["a large red circle in the center", "a small blue square on the left"],
        "version": "diffusion-test",
    }
    values.update(overrides)
    return DiffusionConfig(**values)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def shapes() -> ShapesDataset:
    torch.set_num_threads(1)
    return ShapesDataset(count=32, imsize=32, seed=0)


def unet_weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(run / "pipeline" / "unet" / "diffusion_pytorch_model.safetensors")


def test_run_writes_a_loadable_pipeline_curves_and_grids(shapes: ShapesDataset, tmp_path: Path) -> None:
    result = train(
        tiny_config(), shapes, tmp_path, max_steps=3, console=Console(quiet=True), tensorboard=tmp_path / "tb"
    )
    assert result.step == 3
    lines = (tmp_path / "losses.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in lines] == [1, 2, 3]
    assert all(json.loads(line)["loss"] > 0 for line in lines)
    for png in (result.loss_curve, result.sample_grid, tmp_path / "samples" / "step_000002.png"):
        with Image.open(png) as image:
            assert image.width > 100 and image.height > 50
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tmp_path / "tb"), size_guidance={"scalars": 0, "images": 0}).Reload()
    assert [e.step for e in events.Scalars("loss/loss")] == [1, 2, 3]
    assert [e.step for e in events.Images("samples")] == [2, 3]  # every checkpoint, and the last step
    meta = json.loads((result.pipeline / "imaginebot.json").read_text())
    assert meta["version"] == "diffusion-test" and meta["step"] == 3 and meta["images_seen"] == 12

    # The folder is what IMAGINEBOT_DIFFUSION_MODEL points at: the engine loads and draws with it.
    engine = DiffusionEngine(str(result.pipeline), tmp_path / "data", device="cpu")
    assert engine.info.version == "diffusion-test"
    (images,) = engine.generate([GenerationRequest("a red circle", seeds=[1, 2], steps=2, size=64)])
    assert [image.size for image in images] == [(64, 64), (64, 64)]


def test_export_halves_the_weights_and_draws_the_same_pictures(shapes: ShapesDataset, tmp_path: Path) -> None:
    result = train(tiny_config(), shapes, tmp_path / "run", max_steps=1, console=Console(quiet=True))
    shipped = export_pipeline(result.pipeline, tmp_path / "shipped")
    weights = "unet/diffusion_pytorch_model.safetensors"
    assert (shipped / weights).stat().st_size < 0.6 * (result.pipeline / weights).stat().st_size
    assert json.loads((shipped / "imaginebot.json").read_text())["stored_dtype"] == "float16"
    request = [GenerationRequest("a red circle", seeds=[3], steps=2, size=16)]
    full = DiffusionEngine(str(result.pipeline), tmp_path, device="cpu").generate(request)[0][0]
    half = DiffusionEngine(str(shipped), tmp_path, device="cpu").generate(request)[0][0]
    diff = np.abs(np.asarray(full, dtype=np.int16) - np.asarray(half, dtype=np.int16))
    assert diff.mean() < 1.0


def test_a_model_s_own_guidance_is_used_when_a_job_names_none(shapes: ShapesDataset, tmp_path: Path) -> None:
    """``guidance`` in the config (or ``export_pipeline(guidance=…)``) is saved as the pipeline's
    ``default_guidance``; a job without ``guidance_scale`` is drawn with it, one with its own is not."""
    result = train(
        tiny_config(guidance=4.0), shapes, tmp_path / "run", max_steps=1, console=Console(quiet=True)
    )
    assert json.loads((result.pipeline / "model_index.json").read_text())["default_guidance"] == 4.0
    shipped = export_pipeline(result.pipeline, tmp_path / "shipped", guidance=6.0)
    assert json.loads((shipped / "model_index.json").read_text())["default_guidance"] == 6.0
    engine = DiffusionEngine(str(shipped), tmp_path, device="cpu")
    assert engine.pipe.config.default_guidance == 6.0

    def draw(guidance: float | None) -> np.ndarray:
        request = GenerationRequest("a red circle", seeds=[3], steps=2, size=16, guidance_scale=guidance)
        return np.asarray(engine.generate([request])[0][0], dtype=np.int16)

    unnamed, six, two = draw(None), draw(6.0), draw(2.0)
    assert np.array_equal(unnamed, six)
    assert np.abs(unnamed - two).mean() > 0.5  # the guidance really changes the picture


def test_resume_continues_exactly_where_it_stopped(shapes: ShapesDataset, tmp_path: Path) -> None:
    quiet = Console(quiet=True)
    straight, split = tmp_path / "straight", tmp_path / "split"
    train(tiny_config(), shapes, straight, max_steps=4, console=quiet)
    train(tiny_config(), shapes, split, max_steps=2, console=quiet)
    resumed = train(tiny_config(), shapes, split, max_steps=4, resume=True, console=quiet)
    assert resumed.step == 4
    a, b = unet_weights(straight), unet_weights(split)
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)  # same data order, noise and optimiser moments
    steps = [json.loads(line)["step"] for line in (split / "losses.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4]


def test_stop_callback_ends_the_run_with_a_checkpoint(shapes: ShapesDataset, tmp_path: Path) -> None:
    seen: list[tuple[int, int]] = []

    def stop_after_first(step: int, total: int, loss: float) -> bool:
        seen.append((step, total))
        return True

    result = train(
        tiny_config(checkpoint_every=100),
        shapes,
        tmp_path,
        max_steps=50,
        progress=stop_after_first,
        console=Console(quiet=True),
    )
    assert seen == [(1, 50)] and result.step == 1
    assert json.loads((result.pipeline / "imaginebot.json").read_text())["step"] == 1


def test_config_round_trip_and_bad_keys(tmp_path: Path) -> None:
    config = tiny_config()
    config.save(tmp_path / "c.json")
    assert DiffusionConfig.load(tmp_path / "c.json") == config
    (tmp_path / "bad.json").write_text(json.dumps({"imsize": 16, "lr_typo": 1}))
    with pytest.raises(ValueError, match="lr_typo"):
        DiffusionConfig.load(tmp_path / "bad.json")
    with pytest.raises(ValueError, match="one entry per"):
        DiffusionConfig(attention_levels=(True,)).unet_kwargs()


def test_cli_answers_bad_input_clearly(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from worker.cli import app

    runner = CliRunner()
    unknown = runner.invoke(app, ["train-diffusion", "--dataset", "nope", "--out", str(tmp_path / "x")])
    assert unknown.exit_code != 0 and "unknown dataset 'nope'" in unknown.output
    assert not (tmp_path / "x" / "state").exists()
    run, target = str(tmp_path / "x"), str(tmp_path / "y")
    empty = runner.invoke(app, ["export-diffusion", "--run", run, "--to", target])
    assert empty.exit_code != 0 and "holds no pipeline yet" in empty.output
    assert not (tmp_path / "y").exists()
    missing = runner.invoke(app, ["eval-diffusion", "--model", str(tmp_path / "no-such-model")])
    assert missing.exit_code != 0 and "does not exist" in missing.output
