"""DF-GAN's image pipeline for caption datasets, on PIL images, without torchvision.

Training: resize the short side to ``imsize * 76 / 64``, take a random ``imsize`` square crop, flip
horizontally with probability 1/2, scale to ``[-1, 1]``. Evaluation: the same resize, a centre crop,
no flip. Randomness comes from the ``random.Random`` the caller passes, so a seeded dataset gives the
same crops and flips every time.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from training.images import from_uint8

#: RGB colour that transparent pixels (emoji artwork) are composited onto.
Colour = tuple[int, int, int]


def load_size(imsize: int) -> int:
    """The side the short edge is resized to before cropping ``imsize`` (DF-GAN: ``imsize * 76 / 64``)."""
    return int(imsize * 76 / 64)


def open_rgb(path: str | Path, background: Colour = (255, 255, 255), draft: int = 0) -> Image.Image:
    """Read ``path`` as RGB; transparent pixels are laid on ``background``.

    ``draft`` > 0 lets the JPEG decoder skip detail it would throw away anyway (it decodes at a power-
    of-two reduction whose short side is still at least ``draft``), which makes large COCO photos
    several times cheaper to load.
    """
    with Image.open(path) as image:
        if draft > 0 and image.format == "JPEG":
            image.draft("RGB", (draft, draft))
        if image.mode in ("RGBA", "LA", "P", "PA"):
            rgba = image.convert("RGBA")
            canvas = Image.new("RGBA", rgba.size, (*background, 255))
            return Image.alpha_composite(canvas, rgba).convert("RGB")
        return image.convert("RGB")


def bbox_crop(image: Image.Image, bbox: Sequence[float]) -> Image.Image:
    """DF-GAN's crop around a CUB bounding box ``(x, y, width, height)``: a square of side
    ``1.5 * max(width, height)`` centred on the box, clipped to the image."""
    x, y, w, h = bbox
    r = int(max(w, h) * 0.75)
    cx, cy = int((2 * x + w) / 2), int((2 * y + h) / 2)
    width, height = image.size
    return image.crop((max(0, cx - r), max(0, cy - r), min(width, cx + r), min(height, cy + r)))


def resize_short_side(image: Image.Image, side: int) -> Image.Image:
    """Scale ``image`` so its shorter edge is ``side`` pixels, keeping the aspect ratio."""
    width, height = image.size
    scale = side / min(width, height)
    size = (max(side, round(width * scale)), max(side, round(height * scale)))
    return image if size == image.size else image.resize(size, Image.Resampling.BILINEAR)


def center_square(image: Image.Image, side: int) -> Image.Image:
    """The centred ``side`` x ``side`` crop of ``image`` (which is at least that big)."""
    width, height = image.size
    left, top = (width - side) // 2, (height - side) // 2
    return image.crop((left, top, left + side, top + side))


def to_tensor(image: Image.Image) -> torch.Tensor:
    """RGB image -> float tensor ``[3, H, W]`` in ``[-1, 1]``."""
    pixels = torch.from_numpy(np.asarray(image, dtype=np.uint8).copy())
    return from_uint8(pixels.permute(2, 0, 1))


def random_crop_flip(
    pixels: torch.Tensor, imsize: int, rng: random.Random | None, flip: bool = True
) -> torch.Tensor:
    """Crop ``imsize`` from ``pixels [C, H, W]``: at a random offset with a random horizontal flip
    when ``rng`` is given, else the centre crop with no flip."""
    height, width = pixels.shape[-2:]
    if rng is None:
        top, left = (height - imsize) // 2, (width - imsize) // 2
    else:
        top, left = rng.randint(0, height - imsize), rng.randint(0, width - imsize)
    out = pixels[..., top : top + imsize, left : left + imsize]
    if rng is not None and flip and rng.random() < 0.5:
        out = out.flip(-1)
    return out


class ImageTransform:
    """PIL image -> ``[3, imsize, imsize]`` tensor in ``[-1, 1]``, DF-GAN style.

    With ``train`` the crop is random and the image is flipped half of the time (unless ``flip`` is
    off); without it the crop is centred and never flipped.
    """

    def __init__(self, imsize: int, train: bool = True, flip: bool = True) -> None:
        self.imsize, self.train, self.flip = imsize, train, flip
        self.load_size = load_size(imsize)

    def base(self, image: Image.Image) -> Image.Image:
        """The deterministic part: the short side resized to :attr:`load_size`, centre-cropped
        square (the random crop then moves within it)."""
        return center_square(resize_short_side(image, self.load_size), self.load_size)

    def __call__(self, image: Image.Image, rng: random.Random | None = None) -> torch.Tensor:
        resized = resize_short_side(image, self.load_size)
        return random_crop_flip(to_tensor(resized), self.imsize, rng if self.train else None, self.flip)
