"""Fréchet Inception Distance (FID) between real and generated images, with local Inception weights.

Computed by torchmetrics' ``FrechetInceptionDistance`` (torch-fidelity's InceptionV3, the network
and resizing the FID literature uses). Nothing is downloaded: the caller passes the path of the
Inception weights they downloaded themselves; with no path, :class:`FIDWeightsMissing` says where
to get them. No number is ever reported without them.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn

from training.images import seeded_batches, to_uint8

if TYPE_CHECKING:
    from training.dfgan.checkpoint import LoadedGenerator

#: The Inception weights torchmetrics / torch-fidelity use (TensorFlow's 2015-12-05 FID graph,
#: converted to PyTorch). pytorch-fid's ``pt_inception-2015-12-05-6726825d.pth`` has the same layer
#: names and is accepted too.
INCEPTION_WEIGHTS_FILE = "weights-inception-2015-12-05-6726825d.pth"
INCEPTION_WEIGHTS_URL = (
    "https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/"
    "weights-inception-2015-12-05-6726825d.pth"
)
PYTORCH_FID_WEIGHTS_URL = (
    "https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/"
    "pt_inception-2015-12-05-6726825d.pth"
)


class FIDWeightsMissing(RuntimeError):
    """FID was asked for without usable local Inception weights."""


def missing_weights_message(path: str | Path | None = None) -> str:
    """What to download and how to pass it; mentions ``path`` when one was given but is not a file."""
    where = f"{path} is not a file. " if path is not None else ""
    return (
        f"FID needs Inception weights: {where}download {INCEPTION_WEIGHTS_FILE} from "
        f"{INCEPTION_WEIGHTS_URL} (or pytorch-fid's pt_inception-2015-12-05-6726825d.pth from "
        f"{PYTORCH_FID_WEIGHTS_URL}) and pass --fid-weights PATH"
    )


def inception_feature_extractor(weights_path: str | Path | None) -> nn.Module:
    """torchmetrics' InceptionV3 (2048-d pool features) with the weights at ``weights_path``.

    The file is first read with ``torch.load(weights_only=True)``, which refuses pickles that would
    run code, whatever torch-fidelity's own ``torch.load`` does with it next (its 0.4 release passes
    ``weights_only=False``).
    """
    if weights_path is None or not Path(weights_path).is_file():
        raise FIDWeightsMissing(missing_weights_message(weights_path))
    try:
        torch.load(weights_path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any failure means we must not unpickle it for real
        raise FIDWeightsMissing(
            f"{weights_path} is not a plain PyTorch state dict ({err}). " + missing_weights_message()
        ) from err
    try:
        from torchmetrics.image.fid import NoTrainInceptionV3
    except ImportError as err:  # the dependency is declared; this only helps a broken environment
        raise FIDWeightsMissing("FID needs torchmetrics and torch-fidelity: pip install imaginebot") from err
    return NoTrainInceptionV3(
        name="inception-v3-compat", features_list=["2048"], feature_extractor_weights_path=str(weights_path)
    )


def frechet_inception_distance(
    real: Iterable[torch.Tensor],
    fake: Iterable[torch.Tensor],
    weights_path: str | Path | None = None,
    *,
    feature: nn.Module | None = None,
    device: str | torch.device = "cpu",
) -> float:
    """FID between two sets of images, each given as batches of uint8 ``[B, 3, H, W]`` tensors.

    The features come from the Inception network with the weights at ``weights_path`` (any size
    is resized to 299x299 inside it), or from ``feature``, any module mapping such a batch to
    ``[B, D]`` features (tests use a small random network). Each set needs at least two images.
    """
    from torchmetrics.image.fid import FrechetInceptionDistance

    extractor = feature if feature is not None else inception_feature_extractor(weights_path)
    metric = FrechetInceptionDistance(feature=extractor.to(device), normalize=False).to(device)
    for is_real, batches in ((True, real), (False, fake)):
        for batch in batches:
            if batch.dtype != torch.uint8 or batch.dim() != 4 or batch.shape[1] != 3:
                raise ValueError(
                    f"expected uint8 [B, 3, H, W] batches, got {batch.dtype} {tuple(batch.shape)}"
                )
            with torch.inference_mode():
                metric.update(batch.to(device), real=is_real)
    return float(metric.compute())


def batched(images: torch.Tensor, size: int = 64) -> Iterator[torch.Tensor]:
    """``images`` in chunks of ``size`` along the first dimension."""
    for start in range(0, len(images), size):
        yield images[start : start + size]


def generator_fid(
    loaded: LoadedGenerator,
    real_images: torch.Tensor,
    captions: list[str],
    weights_path: str | Path | None = None,
    *,
    seed: int = 12345,
    batch_size: int = 64,
    feature: nn.Module | None = None,
) -> float:
    """FID of a DF-GAN checkpoint: one image per caption (noise from ``seed + i``, as in
    :func:`training.dfgan.evaluate.evaluate_shapes`) against ``real_images`` (uint8 ``[N, 3, H, W]``,
    typically the images those captions describe)."""
    if feature is None:
        inception_feature_extractor(weights_path)  # fail before generating anything
    fakes = [to_uint8(images) for images in seeded_batches(loaded.draw, captions, seed, batch_size)]
    return frechet_inception_distance(
        batched(real_images, batch_size), fakes, weights_path, feature=feature, device=loaded.device
    )
