"""The paired image: each engine's pictures side by side at the same height, labelled.

One column per engine (two by default, three with a hosted engine); an engine's pictures in a grid
(2×2 for four, 2×1 for two, 2×2 with one place empty for three), numbered 1..n so that the result
buttons (U1, V1, …) can refer to them. Above each column: engine name, model version, time taken.
Under them: the prompt and the seed. Pictures keep their shape (``--ar``).
"""

from __future__ import annotations

import functools
import io
import math
import textwrap
from dataclasses import dataclass

from PIL import Image, ImageDraw, ImageFont

from core.png_metadata import PngParameters

BACKGROUND = (24, 26, 33)
TEXT = (236, 238, 244)
MUTED = (160, 166, 180)
#: The box behind a picture's number in a grid.
BADGE = (12, 13, 17)
#: ``Image.info`` key an engine sets on a picture it withheld; the value names who withheld it.
WITHHELD = "imaginebot_withheld"
ENGINE_TITLES = {"dfgan": "DF-GAN", "diffusion": "Diffusion", "hf-api": "HF Inference API"}


@dataclass
class Panel:
    """One engine's column."""

    engine: str
    version: str
    seconds: float
    images: list[Image.Image]
    #: Shown after the time, e.g. "text only" for an engine that could not use the job's picture.
    note: str = ""


@functools.lru_cache(maxsize=8)
def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow built without FreeType: fixed-size bitmap font
        return ImageFont.load_default()


def grid_shape(count: int) -> tuple[int, int]:
    """(columns, rows) of an engine's ``count`` pictures: one alone, 2×1 for two, 2×2 for three (one
    place left empty) or four, and a near-square grid beyond."""
    if count <= 1:
        return 1, 1
    columns = 2 if count <= 4 else math.ceil(math.sqrt(count))
    return columns, math.ceil(count / columns)


def compose_pair(panels: list[Panel], prompt: str, seed: int, cell: int = 256, pad: int = 12) -> Image.Image:
    """Lay ``panels`` out side by side, each engine's pictures as a grid (:func:`grid_shape`) numbered
    1..n in their top-left corner when there are several; every picture is scaled to ``cell`` pixels
    high and keeps its shape."""
    if not panels:
        raise ValueError("compose_pair needs at least one panel")
    rows = max(grid_shape(len(p.images))[1] for p in panels)
    tiles = [_tile_width(panel, cell) for panel in panels]
    widths = [
        _panel_width(len(panel.images), tile, cell, pad) for panel, tile in zip(panels, tiles, strict=True)
    ]
    label_h = 44
    prompt_lines = textwrap.wrap(prompt, width=max(30, sum(widths) // 8)) or [""]
    footer_h = 12 + 18 * len(prompt_lines[:4]) + 20
    width = pad + sum(w + pad for w in widths)
    height = pad + label_h + rows * (cell + pad) + footer_h
    canvas = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    x = pad
    for panel, col_w, tile in zip(panels, widths, tiles, strict=True):
        _draw_label(draw, panel, x, pad)
        _draw_grid(canvas, draw, panel, (x, pad + label_h), col_w, tile, cell, pad)
        x += col_w + pad
    y = pad + label_h + rows * (cell + pad)
    small_font = _font(13)
    for line in prompt_lines[:4]:
        draw.text((pad, y), line, fill=TEXT, font=small_font)
        y += 18
    draw.text((pad, y + 2), f"seed {seed}", fill=MUTED, font=small_font)
    return canvas


def _tile_width(panel: Panel, cell: int) -> int:
    """Width of one grid place of ``panel``: its widest picture scaled to ``cell`` high."""
    return max((round(img.width * cell / img.height) for img in panel.images), default=cell)


def _panel_width(count: int, tile: int, cell: int, pad: int) -> int:
    """Width of an engine's column: its grid of ``tile``-wide places, at least ``cell`` (the label)."""
    columns = grid_shape(count)[0]
    return max(columns * tile + (columns - 1) * pad, cell)


def _draw_label(draw: ImageDraw.ImageDraw, panel: Panel, x: int, y: int) -> None:
    """Engine name, then version · time · note, above the engine's column."""
    title = ENGINE_TITLES.get(panel.engine, panel.engine)
    draw.text((x, y), title, fill=TEXT, font=_font(16))
    subtitle = " · ".join(filter(None, [panel.version, f"{panel.seconds:.2f} s", panel.note]))
    draw.text((x, y + 21), subtitle, fill=MUTED, font=_font(13))


def _draw_grid(
    canvas: Image.Image,
    draw: ImageDraw.ImageDraw,
    panel: Panel,
    origin: tuple[int, int],
    col_w: int,
    tile: int,
    cell: int,
    pad: int,
) -> None:
    """Paste ``panel``'s pictures as its grid from ``origin`` (centred in the ``col_w`` column)."""
    count = len(panel.images)
    columns = grid_shape(count)[0]
    left = origin[0] + (col_w - (columns * tile + (columns - 1) * pad)) // 2
    for index, img in enumerate(panel.images):
        row, column = divmod(index, columns)
        w = round(img.width * cell / img.height)
        x = left + column * (tile + pad) + (tile - w) // 2
        y = origin[1] + row * (cell + pad)
        # Whole-number upscales (64 -> 256) keep crisp pixels and cost ~nothing; others smooth.
        exact = cell % img.height == 0 and w % img.width == 0
        method = Image.Resampling.NEAREST if exact else Image.Resampling.LANCZOS
        canvas.paste(img.convert("RGB").resize((w, cell), method), (x, y))
        if img.info.get(WITHHELD):
            # The engine replaced this picture (a safety checker's black square): say why.
            reason = f"withheld by the {img.info[WITHHELD]}"
            draw.text((x + 8, y + cell // 2 - 8), reason, fill=TEXT, font=_font(13))
        if count > 1:
            _draw_number(draw, index + 1, x, y)


def _draw_number(draw: ImageDraw.ImageDraw, number: int, x: int, y: int) -> None:
    """``number`` in a small dark box in the top-left corner of the picture at (``x``, ``y``)."""
    font = _font(14)
    left, top, right, bottom = draw.textbbox((0, 0), str(number), font=font)
    box = (x + 4, y + 4, x + 4 + (right - left) + 10, y + 4 + (bottom - top) + 8)
    draw.rectangle(box, fill=BADGE)
    draw.text((box[0] + 5 - left, box[1] + 4 - top), str(number), fill=TEXT, font=font)


def to_png(image: Image.Image, parameters: PngParameters | None = None) -> bytes:
    """PNG bytes of ``image`` (fast compression: these are served once or twice), with the
    ``parameters`` and ``imaginebot`` text chunks of ``parameters`` (:mod:`core.png_metadata`)."""
    buf = io.BytesIO()
    pnginfo = parameters.pnginfo() if parameters is not None else None
    image.save(buf, format="PNG", compress_level=1, pnginfo=pnginfo)
    return buf.getvalue()
