"""Fitting a picture under a chat platform's upload limit before it is sent, never failing on size.

A platform refuses an upload over its limit (Discord: the interaction's ``attachment_size_limit``,
10 MiB by default; Telegram: 10 MB for a photo). :func:`fit_picture` keeps the PNG when it fits (with
its metadata chunk), else re-encodes it — WebP, then JPEG, at falling quality — and, when even that is
too big, halves the pixel count until it fits. The smallest step always fits any sane limit.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

from PIL import Image

#: Lossy encodings tried in order (format, quality), each smaller on average than the one before.
ENCODINGS: tuple[tuple[str, int], ...] = (("WEBP", 90), ("JPEG", 90), ("WEBP", 75), ("JPEG", 75))
#: Each downscale keeps this fraction of each side (about half the pixels).
SHRINK = 0.7
#: Below this many pixels on the longest side a picture is not shrunk further.
MIN_SIDE = 16
MIME = {"PNG": "image/png", "WEBP": "image/webp", "JPEG": "image/jpeg"}
EXTENSION = {"PNG": "png", "WEBP": "webp", "JPEG": "jpg"}


@dataclass(frozen=True)
class FittedPicture:
    """A picture ready to upload: its bytes, format and size, and whether it was changed to fit."""

    data: bytes
    format: str  # "PNG", "WEBP" or "JPEG"
    width: int
    height: int
    reencoded: bool

    @property
    def mime(self) -> str:
        """The upload's content type (``image/webp`` …)."""
        return MIME[self.format]

    @property
    def extension(self) -> str:
        """The file name's extension, without the dot (``webp`` …)."""
        return EXTENSION[self.format]

    def filename(self, stem: str) -> str:
        """``stem`` with this picture's extension."""
        return f"{stem}.{self.extension}"


def fit_picture(png: bytes, max_bytes: int, max_side_sum: int | None = None) -> FittedPicture:
    """``png`` under ``max_bytes`` (and, when given, with width + height <= ``max_side_sum``).

    The PNG itself when it fits; otherwise the first of :data:`ENCODINGS` that fits, at the full size
    and then at smaller sizes (:data:`SHRINK` per step). Never raises for size: past :data:`MIN_SIDE`
    the smallest encoding is returned as it is.
    """
    with Image.open(io.BytesIO(png)) as opened:
        opened.load()
        image = opened.convert("RGB") if opened.mode not in ("RGB", "L") else opened.copy()
    width, height = image.size
    if len(png) <= max_bytes and (max_side_sum is None or width + height <= max_side_sum):
        return FittedPicture(png, "PNG", width, height, reencoded=False)
    scale = 1.0 if max_side_sum is None else min(1.0, max_side_sum / (width + height))
    while True:
        sized = _resized(image, scale)
        smallest: FittedPicture | None = None
        for fmt, quality in ENCODINGS:
            data = _encode(sized, fmt, quality)
            if len(data) <= max_bytes:
                return FittedPicture(data, fmt, sized.width, sized.height, reencoded=True)
            if smallest is None or len(data) < len(smallest.data):
                smallest = FittedPicture(data, fmt, sized.width, sized.height, reencoded=True)
        if max(sized.size) <= MIN_SIDE:
            assert smallest is not None
            return smallest
        scale *= SHRINK


def _resized(image: Image.Image, scale: float) -> Image.Image:
    """``image`` scaled by ``scale`` (Lanczos), at least one pixel a side."""
    if scale >= 1.0:
        return image
    size = (max(1, int(image.width * scale)), max(1, int(image.height * scale)))
    return image.resize(size, Image.Resampling.LANCZOS)


def _encode(image: Image.Image, fmt: str, quality: int) -> bytes:
    """``image`` encoded as ``fmt`` at ``quality``."""
    out = io.BytesIO()
    image.save(out, format=fmt, quality=quality)
    return out.getvalue()


def fit_note(fitted: FittedPicture, max_bytes: int) -> str:
    """One line saying how a picture was changed to fit ``max_bytes`` ("" when it was not)."""
    if not fitted.reencoded:
        return ""
    return (
        f"(sent as {fitted.format} {fitted.width}×{fitted.height} to fit the {_size(max_bytes)} upload limit)"
    )


def _size(n: int) -> str:
    """``n`` bytes in MiB or KiB, as platforms state their limits."""
    if n >= 1024 * 1024:
        return f"{n / (1024 * 1024):g} MiB"
    return f"{n / 1024:.0f} KiB"
