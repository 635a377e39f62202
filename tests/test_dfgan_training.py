"""DF-GAN losses, a tiny training run, and exact resume."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from training.data import get_dataset
from training.dfgan.checkpoint import load_generator
from training.dfgan.config import DFGANConfig
from training.dfgan.losses import discriminator_loss, generator_loss, matching_aware_gradient_penalty
from training.dfgan.trainer import train


def test_hinge_losses_on_known_scores() -> None:
    real, fake, mis = torch.tensor([2.0, 0.0]), torch.tensor([-2.0, 0.5]), torch.tensor([0.0, -1.0])
    # relu(1 - real) = [0, 1]; relu(1 + fake) = [0, 1.5]; relu(1 + mis) = [1, 0]
    assert discriminator_loss(real, fake, mis, "hinge").item() == pytest.approx(0.5 + (0.75 + 0.5) / 2)
    assert generator_loss(fake, "hinge").item() == pytest.approx(0.75)
    assert discriminator_loss(real, fake, mis, "bce").item() > 0
    with pytest.raises(ValueError):
        generator_loss(fake, "wasserstein")


def test_ma_gp_matches_the_closed_form_for_a_linear_critic() -> None:
    images = torch.randn(4, 3, 2, 2, requires_grad=True)
    sentences = torch.randn(4, 5, requires_grad=True)
    w_img, w_sent = torch.randn(12, requires_grad=True), torch.randn(5, requires_grad=True)
    scores = images.flatten(1) @ w_img + sentences @ w_sent
    # The gradient of a linear critic is its weight vector, for every sample.
    norm = torch.cat((w_img, w_sent)).norm()
    gp = matching_aware_gradient_penalty(images, sentences, scores, k=2.0, p=6.0)
    assert gp.item() == pytest.approx(2.0 * norm.item() ** 6, rel=1e-4)
    assert gp.requires_grad  # it must be trainable through (create_graph)


TINY = DFGANConfig(ngf=8, ndf=8, batch_size=8, checkpoint_every=2, epochs=1, ema_decay=0.9, version="tiny")


@pytest.fixture(scope="module")
def tiny_data():  # noqa: ANN201 - a ShapesDataset
    return get_dataset("shapes", None, imsize=64, count=32, seed=0)


def test_tiny_run_writes_checkpoint_curve_and_grid(tmp_path: Path, tiny_data) -> None:  # noqa: ANN001
    result = train(TINY, tiny_data, tmp_path, max_steps=4)
    assert result.step == 4
    for name in ("config.json", "generator.safetensors", "training_state.safetensors"):
        assert (tmp_path / "checkpoint" / name).is_file(), name
    assert json.loads((tmp_path / "checkpoint" / "config.json").read_text())["training"]["step"] == 4
    # 32 images / batch 8 = one epoch every 4 steps -> the epoch-1 grid exists.
    grid = Image.open(tmp_path / "samples" / "epoch_001.png")
    assert grid.size == (240 + 4 * 64, len(tiny_data.sample_prompts) * 64)
    assert Image.open(result.loss_curve).size[0] > 100
    assert len((tmp_path / "losses.jsonl").read_text().splitlines()) == 4
    loaded = load_generator(tmp_path / "checkpoint", "cpu")
    assert loaded.version == "tiny" and loaded.config.ngf == 8


def test_resume_continues_exactly_where_it_stopped(tmp_path: Path, tiny_data) -> None:  # noqa: ANN001
    straight = train(TINY, tiny_data, tmp_path / "a", max_steps=4)
    train(TINY, tiny_data, tmp_path / "b", max_steps=2)
    # A new version label on resume is kept (a label, not a hyper-parameter); the weights are the same.
    resumed = train(replace(TINY, version="tiny-v2"), tiny_data, tmp_path / "b", max_steps=4, resume=True)
    assert resumed.step == 4
    assert json.loads((resumed.checkpoint / "config.json").read_text())["version"] == "tiny-v2"
    a = load_file(straight.checkpoint / "generator.safetensors")
    b = load_file(resumed.checkpoint / "generator.safetensors")
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    steps = [json.loads(line)["step"] for line in (tmp_path / "b" / "losses.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4]


def test_without_resume_a_run_starts_over(tmp_path: Path, tiny_data) -> None:  # noqa: ANN001
    train(TINY, tiny_data, tmp_path, max_steps=2)
    again = train(TINY, tiny_data, tmp_path, max_steps=2)
    assert again.step == 2
    steps = [json.loads(line)["step"] for line in (tmp_path / "losses.jsonl").read_text().splitlines()]
    assert steps == [1, 2]


def test_cli_refuses_unknown_dataset_and_evaluates_a_checkpoint(tmp_path: Path, tiny_data) -> None:  # noqa: ANN001
    from typer.testing import CliRunner

    from training.cli import app

    runner = CliRunner()
    refused = runner.invoke(app, ["train", "--dataset", "nope", "--out", str(tmp_path / "x"), "--steps", "1"])
    assert refused.exit_code != 0 and "unknown dataset" in refused.output

    train(TINY, tiny_data, tmp_path / "run", max_steps=2)
    scores_file = tmp_path / "scores.json"
    args = ["eval", "--checkpoint", str(tmp_path / "run" / "checkpoint"), "--count", "20", "--device", "cpu"]
    evaluated = runner.invoke(app, [*args, "--json", str(scores_file)])
    assert evaluated.exit_code == 0, evaluated.output
    scores = json.loads(scores_file.read_text())
    assert scores["version"] == "tiny" and scores["count"] == 20
    assert {"colour", "shape", "size", "position", "all"} <= scores.keys()
    assert all(0.0 <= scores[k] <= 1.0 for k in ("colour", "shape", "size", "position", "all"))


class TwoCaptionShapes(torch.utils.data.Dataset):
    """Shapes images with two captions each, returned alternately per access (like random pairing):
    ``captions`` lists only the first, ``all_captions`` both."""

    def __init__(self, base) -> None:  # noqa: ANN001 - a ShapesDataset
        self.base, self.calls = base, 0
        self.captions = list(base.captions)
        self.all_captions = [*self.captions, *(f"{c} again" for c in self.captions)]
        self.sample_prompts = base.sample_prompts

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, str]:
        self.calls += 1
        image, caption = self.base[index]
        return image, caption if self.calls % 2 else f"{caption} again"


def test_training_uses_the_caption_each_item_returned(
    tmp_path: Path,
    tiny_data,
    monkeypatch: pytest.MonkeyPatch,  # noqa: ANN001
) -> None:
    import training.dfgan.trainer as trainer
    from training.dfgan.conditioning import sentence_vectors
    from training.text.encoders import load_text_encoder

    seen: list[torch.Tensor] = []
    real_step = trainer.train_step

    def spy(m, c, real, sent, noise):  # noqa: ANN001, ANN202 - records the batch's sentence vectors
        seen.append(sent.clone())
        return real_step(m, c, real, sent, noise)

    monkeypatch.setattr(trainer, "train_step", spy)
    train(TINY, TwoCaptionShapes(tiny_data), tmp_path, max_steps=1)
    assert len(seen) == 1
    order = torch.randperm(32, generator=torch.Generator().manual_seed(TINY.seed))  # epoch 0's order
    captions = []
    for k in range(TINY.batch_size):  # access k + 1 returns the first caption when odd, else the second
        base = tiny_data.captions[int(order[k])]
        captions.append(base if (k + 1) % 2 else f"{base} again")
    expected = sentence_vectors(load_text_encoder(TINY.text_encoder), captions, TINY)
    assert torch.allclose(seen[0], expected, atol=1e-5)


def test_tensorboard_logs_every_step_and_the_sample_grids(tmp_path: Path, tiny_data) -> None:  # noqa: ANN001
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    train(TINY, tiny_data, tmp_path / "run", max_steps=4, tensorboard=tmp_path / "tb")
    events = EventAccumulator(str(tmp_path / "tb"), size_guidance={"scalars": 0, "images": 0}).Reload()
    assert [e.step for e in events.Scalars("loss/loss_d")] == [1, 2, 3, 4]
    assert {"loss/loss_g", "loss/gp"} <= set(events.Tags()["scalars"])
    assert [e.step for e in events.Images("samples")] == [4]  # one epoch of 32 images at batch 8
