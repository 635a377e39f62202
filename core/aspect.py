"""Aspect ratios (``--ar W:H``): the check of what a person typed, and the picture's width and height.

A job keeps about ``size²`` pixels whatever its shape: ``--size 64 --ar 16:9`` draws 88×48. Every side
is a multiple of 8 (what latent diffusion models need; an engine that needs more rounds again) and at
most :data:`MAX_SIDE`. Ratios from 1:4 to 4:1 are allowed. The shape comes within 7 % of the ratio asked
for; the pixel count within ×0.75–1.55 of ``size²`` at size 64 (an 8-pixel step is coarse there),
×0.9–1.15 at 256.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from core.errors import InputError

#: Most elongated shapes allowed, both ways (width/height).
MIN_RATIO, MAX_RATIO = 1 / 4, 4.0
#: Every side is a multiple of this (latent diffusion's 8-pixel latent cells).
SIDE_MULTIPLE = 8
#: Largest side any engine is asked for (the diffusion engine's own limit).
MAX_SIDE = 2048
#: How much a pixel count off the budget weighs against a ratio off the one asked for (both as logs).
_AREA_WEIGHT = 0.1
_FORM = re.compile(r"\s*(\d{1,6})\s*:\s*(\d{1,6})\s*")
AR_EXAMPLE = "--ar 16:9"


@dataclass(frozen=True)
class Aspect:
    """A width:height ratio in lowest terms (``16:9``)."""

    width: int
    height: int

    @property
    def ratio(self) -> float:
        """Width over height."""
        return self.width / self.height

    @property
    def square(self) -> bool:
        """True for 1:1."""
        return self.width == self.height

    def __str__(self) -> str:
        return f"{self.width}:{self.height}"


def parse_aspect(text: str) -> Aspect:
    """``"16:9"`` (spaces allowed, any common factor) as an :class:`Aspect` in lowest terms.

    Raises:
        InputError: not ``W:H`` with whole numbers, a side of 0, or a ratio beyond 1:4..4:1.
    """
    found = _FORM.fullmatch(text)
    if found is None:
        raise InputError(
            "bad_aspect",
            f"--ar must be two whole numbers as width:height, e.g. {AR_EXAMPLE} or --ar 2:3, "
            f"not '{text[:20]}'.",
        )
    width, height = int(found.group(1)), int(found.group(2))
    if width == 0 or height == 0:
        raise InputError("bad_aspect", f"--ar sides must be above 0, e.g. {AR_EXAMPLE}, not '{text[:20]}'.")
    common = math.gcd(width, height)
    aspect = Aspect(width // common, height // common)
    if not MIN_RATIO <= aspect.ratio <= MAX_RATIO:
        what = "wide" if aspect.ratio > MAX_RATIO else "tall"
        raise InputError(
            "aspect_out_of_range",
            f"--ar {aspect} is too {what}: ratios from 1:4 (tall) to 4:1 (wide) are allowed.",
        )
    return aspect


def normalize_aspect(text: str | None) -> str | None:
    """The ratio a job records: lowest terms (``32:18`` -> ``16:9``), None for none or 1:1.

    Raises:
        InputError: as :func:`parse_aspect`.
    """
    if text is None or not text.strip():
        return None
    aspect = parse_aspect(text)
    return None if aspect.square else str(aspect)


def fit_dimensions(
    side: int, ratio: float, multiple: int = SIDE_MULTIPLE, max_side: int = MAX_SIDE
) -> tuple[int, int]:
    """(width, height) of about ``side²`` pixels at ``ratio`` (width/height), sides multiples of
    ``multiple`` no larger than ``max_side``: the candidate closest to the ratio and the pixel count.
    A square is ``(side, side)`` unchanged."""
    if math.isclose(ratio, 1.0):
        return side, side
    budget = side * side
    best: tuple[float, int, int] | None = None
    for height in range(multiple, max_side + 1, multiple):
        width = max(multiple, round(height * ratio / multiple) * multiple)
        if width > max_side:
            break
        score = abs(math.log(width / height / ratio)) + _AREA_WEIGHT * abs(math.log(width * height / budget))
        if best is None or score < best[0]:
            best = (score, width, height)
    if best is None:  # no candidate fits (a side under one multiple): the square budget
        return side, side
    return best[1], best[2]


def dimensions(size: int, aspect: str | None) -> tuple[int, int]:
    """(width, height) of a job of ``size`` (the square side budget) and ``aspect`` (None: square)."""
    if aspect is None:
        return size, size
    return fit_dimensions(size, parse_aspect(aspect).ratio)
