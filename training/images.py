"""Generator output -> pictures, written once: ``[-1, 1]`` float tensors become uint8 pixels or PIL
images (and dataset pixels become ``[-1, 1]`` tensors).

Every drawer (the DF-GAN engine, evaluation, sample grids, FID, the diffusion pipeline) rounds the same
way, so a picture is the same whichever of them drew it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import torch
from PIL import Image

#: ``generate(captions, seeds)`` -> images ``[N, 3, H, W]`` in [-1, 1], or N PIL images; image ``i``
#: shows ``captions[i]`` drawn from ``seeds[i]``. What evaluation (attributes, R-precision) scores.
ImageGenerator = Callable[[list[str], list[int]], torch.Tensor | list[Image.Image]]


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """Values in [-1, 1] (any shape; clamped first) -> uint8 pixels 0..255, rounded to nearest.

    Half-precision input is widened to float32 first; float32 and float64 are used as they are.
    """
    if images.dtype in (torch.float16, torch.bfloat16):
        images = images.float()
    return ((images.detach().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


def from_uint8(pixels: torch.Tensor) -> torch.Tensor:
    """The inverse of :func:`to_uint8`: pixels 0..255 (any shape) -> float32 in [-1, 1]."""
    return pixels.float() / 127.5 - 1


def to_pil(images: torch.Tensor | list[Image.Image]) -> list[Image.Image]:
    """PIL RGB images from a ``[N, 3, H, W]`` batch in [-1, 1] (a list of PIL images is returned as is)."""
    if not isinstance(images, torch.Tensor):
        return list(images)
    array = to_uint8(images).permute(0, 2, 3, 1).cpu().numpy()
    return [Image.fromarray(np.ascontiguousarray(a)) for a in array]


def seeded_batches(
    generate: ImageGenerator, captions: list[str], seed: int, batch_size: int = 64
) -> Iterator[torch.Tensor | list[Image.Image]]:
    """``generate`` over ``captions`` in batches of ``batch_size``, image ``i`` drawn with seed
    ``seed + i`` (how every evaluation numbers its images); yields each batch's images."""
    for start in range(0, len(captions), batch_size):
        batch = captions[start : start + batch_size]
        yield generate(batch, [seed + start + i for i in range(len(batch))])
