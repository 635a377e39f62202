"""A contact sheet of a community dataset: its first pictures as thumbnails on one PNG."""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

from PIL import Image, ImageDraw

#: Side of one thumbnail, in pixels.
THUMB = 96
#: Thumbnails per row.
COLUMNS = 6
#: At most this many thumbnails on a sheet.
MAX_THUMBS = 36
_GAP = 4
_BACKGROUND = (32, 32, 32)


def contact_sheet(pictures: Sequence[Path], thumb: int = THUMB, columns: int = COLUMNS) -> bytes:
    """A PNG with the first :data:`MAX_THUMBS` of ``pictures`` as ``thumb``-pixel thumbnails, row by
    row (a picture that cannot be read is a grey square with a cross)."""
    shown = list(pictures)[:MAX_THUMBS]
    cols = max(1, min(columns, len(shown)))
    rows = max(1, -(-len(shown) // cols))
    sheet = Image.new("RGB", (_GAP + cols * (thumb + _GAP), _GAP + rows * (thumb + _GAP)), _BACKGROUND)
    for index, path in enumerate(shown):
        x = _GAP + (index % cols) * (thumb + _GAP)
        y = _GAP + (index // cols) * (thumb + _GAP)
        tile = _thumbnail(path, thumb)
        sheet.paste(tile, (x + (thumb - tile.width) // 2, y + (thumb - tile.height) // 2))
    out = io.BytesIO()
    sheet.save(out, format="PNG")
    return out.getvalue()


def _thumbnail(path: Path, side: int) -> Image.Image:
    try:
        with Image.open(path) as image:
            tile = image.convert("RGB")
    except (OSError, ValueError):
        tile = Image.new("RGB", (side, side), (96, 96, 96))
        draw = ImageDraw.Draw(tile)
        draw.line((0, 0, side, side), fill=(200, 0, 0), width=2)
        draw.line((0, side, side, 0), fill=(200, 0, 0), width=2)
        return tile
    tile.thumbnail((side, side), Image.Resampling.LANCZOS)
    return tile
