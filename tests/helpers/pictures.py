"""Small pictures for upload tests: good ones in each accepted format, and the bad kinds."""

from __future__ import annotations

import io

from PIL import Image


def picture(fmt: str = "PNG", size: tuple[int, int] = (80, 60)) -> bytes:
    """A green square on white, ``size`` pixels, encoded as ``fmt`` (PNG, JPEG, WEBP, GIF…)."""
    width, height = size
    image = Image.new("RGB", size, (250, 250, 250))
    image.paste((20, 160, 40), (width // 4, height // 6, 3 * width // 4, 5 * height // 6))
    out = io.BytesIO()
    image.save(out, format=fmt)
    return out.getvalue()


def truncated_png() -> bytes:
    """The first half of a noisy PNG: its header reads, its pixels do not."""
    out = io.BytesIO()
    Image.effect_noise((128, 128), 64).convert("RGB").save(out, format="PNG")
    return out.getvalue()[: len(out.getvalue()) // 2]
