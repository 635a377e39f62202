"""A procedural dataset small enough for a GAN to learn on a CPU, with an exact answer key.

Each image is one filled shape on a grey background; its caption states colour, shape, size and
position, e.g. ``"a large green triangle on the left"``. :func:`check_image` reads those attributes
back from any image (a rendered one or a generated one), which makes text-image agreement measurable
without a learned metric.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image, ImageDraw

from training.images import from_uint8

# A mid-grey background and colours within [35, 230]: the generator ends in tanh, and a white
# background asks for values near +1. Shapes runs on white (255) and light grey (235) backgrounds
# collapsed within a few hundred steps to all +1, where tanh's gradient vanishes and G stops learning.
BACKGROUND = (150, 150, 150)
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (215, 40, 40),
    "green": (40, 160, 60),
    "blue": (40, 80, 215),
    "yellow": (230, 205, 40),
    "purple": (140, 50, 175),
    "orange": (230, 130, 35),
}
SHAPES = ("circle", "square", "triangle")
SIZES = ("small", "large")
#: Position phrase -> centre of the shape as a fraction of the image side (x, y).
POSITIONS: dict[str, tuple[float, float]] = {
    "on the left": (0.25, 0.5),
    "on the right": (0.75, 0.5),
    "at the top": (0.5, 0.25),
    "at the bottom": (0.5, 0.75),
    "in the center": (0.5, 0.5),
}
#: Side of the shape's bounding box as a fraction of the image side.
_SIZE_FRACTION = {"small": 0.25, "large": 0.44}
_JITTER = 0.05  # of the image side, for position and size, so no two images are pixel-identical

ATTRIBUTES = ("colour", "shape", "size", "position")


@dataclass(frozen=True)
class ShapeSpec:
    """What one image shows; :attr:`caption` says it in words."""

    colour: str
    shape: str
    size: str
    position: str

    @property
    def caption(self) -> str:
        return f"a {self.size} {self.colour} {self.shape} {self.position}"


def all_specs() -> list[ShapeSpec]:
    """Every (colour, shape, size, position) combination: 6 x 3 x 2 x 5 = 180."""
    return [ShapeSpec(c, s, z, p) for c in COLOURS for s in SHAPES for z in SIZES for p in POSITIONS]


def parse_caption(caption: str) -> ShapeSpec:
    """The attributes a caption asks for. Raises ``ValueError`` if one is missing."""
    text = caption.lower()

    def find(options: tuple[str, ...] | list[str], what: str) -> str:
        hits = [o for o in options if re.search(rf"\b{re.escape(o)}\b", text)]
        if len(hits) != 1:
            raise ValueError(f"caption {caption!r} must name exactly one {what}")
        return hits[0]

    return ShapeSpec(
        colour=find(list(COLOURS), "colour"),
        shape=find(SHAPES, "shape"),
        size=find(SIZES, "size"),
        position=find(list(POSITIONS), "position"),
    )


def render(spec: ShapeSpec, imsize: int = 64, rng: random.Random | None = None) -> Image.Image:
    """Draw ``spec`` on a grey ``imsize`` square; ``rng`` jitters position and size slightly."""
    rng = rng or random.Random(0)
    image = Image.new("RGB", (imsize, imsize), BACKGROUND)
    side = imsize * (_SIZE_FRACTION[spec.size] + rng.uniform(-_JITTER, _JITTER) / 2)
    fx, fy = POSITIONS[spec.position]
    cx = imsize * (fx + rng.uniform(-_JITTER, _JITTER))
    cy = imsize * (fy + rng.uniform(-_JITTER, _JITTER))
    x0, y0, x1, y1 = cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2
    draw, fill = ImageDraw.Draw(image), COLOURS[spec.colour]
    if spec.shape == "circle":
        draw.ellipse((x0, y0, x1, y1), fill=fill)
    elif spec.shape == "square":
        draw.rectangle((x0, y0, x1, y1), fill=fill)
    else:  # an upright triangle filling half its bounding box
        draw.polygon([(cx, y0), (x1, y1), (x0, y1)], fill=fill)
    return image


def make_specs(count: int, seed: int = 0) -> list[ShapeSpec]:
    """``count`` specs cycling through every combination in a seeded order (balanced classes)."""
    rng = random.Random(seed)
    specs: list[ShapeSpec] = []
    while len(specs) < count:
        block = all_specs()
        rng.shuffle(block)
        specs.extend(block)
    return specs[:count]


class RenderedImages(torch.utils.data.Dataset):
    """Procedurally rendered pictures held in memory as uint8 NCHW, with their captions.

    Items are ``(image [3, imsize, imsize] in [-1, 1], caption)``.
    """

    def __init__(self, pictures: list[Image.Image], captions: list[str], imsize: int) -> None:
        self.imsize = imsize
        self.captions = captions
        pixels = np.stack([np.asarray(p) for p in pictures])
        self.images = torch.from_numpy(pixels).permute(0, 3, 1, 2).contiguous()  # uint8 NCHW

    def __len__(self) -> int:
        return len(self.captions)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, str]:
        return from_uint8(self.images[index]), self.captions[index]


class ShapesDataset(RenderedImages):
    """``count`` rendered images (deterministic from ``seed``), held in memory as uint8."""

    def __init__(self, count: int = 10_000, imsize: int = 64, seed: int = 0) -> None:
        self.specs = make_specs(count, seed)
        rng = random.Random(seed + 1)
        pictures = [render(s, imsize, rng) for s in self.specs]
        super().__init__(pictures, [s.caption for s in self.specs], imsize)

    #: Prompts for the per-epoch sample grid: one per colour, covering shapes, sizes and positions.
    sample_prompts = [
        "a large red circle in the center",
        "a small green square on the left",
        "a large blue triangle on the right",
        "a small yellow circle at the top",
        "a large purple square at the bottom",
        "a large orange triangle in the center",
        "a small blue circle on the right",
        "a large green triangle at the top",
    ]


# --- reading an image back ------------------------------------------------------------------------

_PALETTE_NAMES = ["background", *COLOURS]
_PALETTE = np.array([BACKGROUND, *COLOURS.values()], dtype=np.float32)


def read_image(image: Image.Image) -> ShapeSpec | None:
    """What ``image`` shows, by nearest-palette segmentation; ``None`` if it shows no shape.

    Colour: the most frequent non-background palette colour. Shape: how much of its bounding box
    the shape fills (square ~1, circle ~0.79, triangle ~0.5). Size: the bounding box's side.
    Position: the nearest of the five anchor points to the bounding box's centre.
    """
    pixels = np.asarray(image.convert("RGB"), dtype=np.float32)
    side = pixels.shape[0]
    distances = ((pixels[:, :, None, :] - _PALETTE[None, None]) ** 2).sum(-1)
    labels = distances.argmin(-1)
    counts = np.bincount(labels.ravel(), minlength=len(_PALETTE))
    counts[0] = 0
    # A handful of stray pixels is not a shape: require 1% of the image.
    if counts.max() < 0.01 * labels.size:
        return None
    colour_index = int(counts.argmax())
    mask = labels == colour_index
    ys, xs = np.nonzero(mask)
    # Trim the outermost 1% of pixels on each axis so a few stray specks do not inflate the box.
    x0, x1 = np.percentile(xs, [1, 99])
    y0, y1 = np.percentile(ys, [1, 99])
    width, height = x1 - x0 + 1, y1 - y0 + 1
    inside = mask[int(y0) : int(y1) + 1, int(x0) : int(x1) + 1]
    fill = inside.sum() / max(width * height, 1)
    shape = "square" if fill > 0.9 else "circle" if fill > 0.65 else "triangle"
    box = max(width, height) / side
    size = "small" if box < (_SIZE_FRACTION["small"] + _SIZE_FRACTION["large"]) / 2 else "large"
    centre = np.array([(x0 + x1) / 2, (y0 + y1) / 2]) / side
    position = min(POSITIONS, key=lambda p: float(np.linalg.norm(centre - np.array(POSITIONS[p]))))
    return ShapeSpec(_PALETTE_NAMES[colour_index], shape, size, position)


def check_image(image: Image.Image, caption: str) -> dict[str, bool]:
    """Which of the caption's attributes (colour, shape, size, position) ``image`` shows."""
    wanted, seen = parse_caption(caption), read_image(image)
    if seen is None:
        return dict.fromkeys(ATTRIBUTES, False)
    return {a: getattr(wanted, a) == getattr(seen, a) for a in ATTRIBUTES}
