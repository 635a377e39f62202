"""The paired image: each engine's pictures side by side at the same height, labelled.

One column per engine (two by default, three with a hosted engine), one row per image of the job.
Above each column: engine name, model version, time taken. Under them: the prompt and the seed.
"""

from __future__ import annotations

import functools
import io
import textwrap
from dataclasses import dataclass

from PIL import Image, ImageDraw, ImageFont

BACKGROUND = (24, 26, 33)
TEXT = (236, 238, 244)
MUTED = (160, 166, 180)
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


def compose_pair(panels: list[Panel], prompt: str, seed: int, cell: int = 256, pad: int = 12) -> Image.Image:
    """Lay ``panels`` out side by side; every picture is scaled to ``cell`` pixels high."""
    if not panels:
        raise ValueError("compose_pair needs at least one panel")
    rows = max(len(p.images) for p in panels)
    title_font, small_font = _font(16), _font(13)
    widths = []
    for panel in panels:
        w = max((round(img.width * cell / img.height) for img in panel.images), default=cell)
        widths.append(max(w, cell))
    label_h = 44
    prompt_lines = textwrap.wrap(prompt, width=max(30, sum(widths) // 8)) or [""]
    footer_h = 12 + 18 * len(prompt_lines[:4]) + 20
    width = pad + sum(w + pad for w in widths)
    height = pad + label_h + rows * (cell + pad) + footer_h
    canvas = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    x = pad
    for panel, col_w in zip(panels, widths, strict=True):
        title = ENGINE_TITLES.get(panel.engine, panel.engine)
        draw.text((x, pad), title, fill=TEXT, font=title_font)
        subtitle = " · ".join(filter(None, [panel.version, f"{panel.seconds:.2f} s", panel.note]))
        draw.text((x, pad + 21), subtitle, fill=MUTED, font=small_font)
        y = pad + label_h
        for img in panel.images:
            w = round(img.width * cell / img.height)
            # Whole-number upscales (64 -> 256) keep crisp pixels and cost ~nothing; others smooth.
            exact = cell % img.height == 0 and w % img.width == 0
            method = Image.Resampling.NEAREST if exact else Image.Resampling.LANCZOS
            scaled = img.convert("RGB").resize((w, cell), method)
            canvas.paste(scaled, (x + (col_w - w) // 2, y))
            if img.info.get(WITHHELD):
                # The engine replaced this picture (a safety checker's black square): say why.
                reason = f"withheld by the {img.info[WITHHELD]}"
                draw.text((x + (col_w - w) // 2 + 8, y + cell // 2 - 8), reason, fill=TEXT, font=small_font)
            y += cell + pad
        x += col_w + pad
    y = pad + label_h + rows * (cell + pad)
    for line in prompt_lines[:4]:
        draw.text((pad, y), line, fill=TEXT, font=small_font)
        y += 18
    draw.text((pad, y + 2), f"seed {seed}", fill=MUTED, font=small_font)
    return canvas


def to_png(image: Image.Image) -> bytes:
    """PNG bytes of ``image`` (fast compression: these are served once or twice)."""
    buf = io.BytesIO()
    image.save(buf, format="PNG", compress_level=1)
    return buf.getvalue()
