"""FID hook: refuses to run without local Inception weights; the real torchmetrics path on a small network."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from training.eval.fid import (
    FIDWeightsMissing,
    batched,
    frechet_inception_distance,
    generator_fid,
    inception_feature_extractor,
)


class TinyFeatures(nn.Module):
    """A small, randomly initialised stand-in for Inception: uint8 images -> 8-d features."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return 10 * self.net(images.float() / 127.5 - 1)


def _images(seed: int, count: int = 64, bright: bool = False) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    low, high = (128, 256) if bright else (0, 256)
    return torch.randint(low, high, (count, 3, 32, 32), generator=g, dtype=torch.uint8)


def test_without_weights_fid_says_what_to_download() -> None:
    with pytest.raises(FIDWeightsMissing, match="FID needs Inception weights.*--fid-weights PATH"):
        frechet_inception_distance([_images(0)], [_images(1)], None)


def test_a_missing_weights_file_is_named_in_the_message(tmp_path: Path) -> None:
    with pytest.raises(FIDWeightsMissing, match="nope.pth is not a file"):
        inception_feature_extractor(tmp_path / "nope.pth")


def test_weights_that_are_not_a_plain_state_dict_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "weights.pth"
    torch.save({"conv": TinyFeatures()}, path)  # a pickled module, not just tensors
    with pytest.raises(FIDWeightsMissing, match="not a plain PyTorch state dict"):
        inception_feature_extractor(path)


def test_fid_of_a_set_with_itself_is_zero_and_with_another_set_is_not() -> None:
    images = _images(0)
    same = frechet_inception_distance(batched(images, 16), batched(images, 16), feature=TinyFeatures())
    assert same == pytest.approx(0.0, abs=1e-3)
    other = frechet_inception_distance(
        batched(images, 16), batched(_images(1, bright=True), 16), feature=TinyFeatures()
    )
    assert other > 0.01 and other > 100 * abs(same)


def test_fid_rejects_float_images() -> None:
    with pytest.raises(ValueError, match="uint8"):
        frechet_inception_distance([torch.rand(4, 3, 8, 8)], [_images(0)], feature=TinyFeatures())


def test_generator_fid_runs_the_generator_against_real_images() -> None:
    from training.data import get_dataset
    from training.dfgan.checkpoint import load_generator

    torch.set_num_threads(1)
    data = get_dataset("shapes", None, imsize=64, count=24, seed=3)
    loaded = load_generator(None, "cpu")  # the (nearly flat) random-init placeholder
    fid = generator_fid(loaded, data.images, data.captions, feature=TinyFeatures(), batch_size=8)
    real_vs_real = frechet_inception_distance(
        batched(data.images, 8), batched(data.images, 8), feature=TinyFeatures()
    )
    assert fid > 0.01 and fid > 100 * abs(real_vs_real)


def test_eval_command_explains_missing_fid_weights(tmp_path: Path) -> None:
    from training.cli import app

    result = CliRunner().invoke(
        app, ["eval", "--count", "2", "--fid-weights", str(tmp_path / "inception.pth")]
    )
    assert result.exit_code != 0
    assert "FID needs Inception weights" in result.output


def test_the_inception_path_runs_with_a_local_weights_file(tmp_path: Path) -> None:
    """torchmetrics' InceptionV3 built from a local file (random weights with the real layer names
    and shapes: torchvision's InceptionV3 with 1008 classes), without any download."""
    import torchvision

    torch.set_num_threads(1)
    path = tmp_path / "weights-inception-2015-12-05-6726825d.pth"
    net = torchvision.models.inception_v3(
        weights=None, aux_logits=False, num_classes=1008, init_weights=False
    )
    torch.save(net.state_dict(), path)
    extractor = inception_feature_extractor(path)
    assert extractor(_images(0, count=2)).shape == (2, 2048)
    images, other = _images(0, count=6), _images(1, count=6, bright=True)
    same = frechet_inception_distance([images], [images], path)
    different = frechet_inception_distance([images], [other], path)
    assert abs(same) < 1e-3 * different and different > 0
