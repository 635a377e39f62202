"""The labelled sample grid every trainer writes: one row per prompt, one column per seed."""

from __future__ import annotations

import textwrap

from PIL import Image, ImageDraw

#: Width of the prompt column on the left of a grid.
LABEL_WIDTH = 240


def labelled_grid(rows: list[list[Image.Image]], labels: list[str], scale: int = 1) -> Image.Image:
    """Paste ``rows[r][c]`` at row ``r``, column ``c`` (tiles upscaled ``scale``×, nearest) beside
    ``labels[r]`` (wrapped at 40 characters, at most three lines) on a white sheet."""
    side = rows[0][0].width * scale
    columns = max(len(row) for row in rows)
    grid = Image.new("RGB", (LABEL_WIDTH + side * columns, side * len(rows)), "white")
    draw = ImageDraw.Draw(grid)
    for r, (row, label) in enumerate(zip(rows, labels, strict=True)):
        lines = textwrap.wrap(label, 40)[:3] or [""]
        # ~11 px per line of PIL's default font, centred on the row
        draw.multiline_text((4, r * side + side // 2 - 6 * len(lines)), "\n".join(lines), fill="black")
        for c, tile in enumerate(row):
            if scale != 1:
                tile = tile.resize((side, side), Image.NEAREST)
            grid.paste(tile.convert("RGB"), (LABEL_WIDTH + c * side, r * side))
    return grid
