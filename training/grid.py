"""The labelled sample grid every trainer writes: one row per prompt, one column per seed."""

from __future__ import annotations

from PIL import Image, ImageDraw

#: Width of the prompt column on the left of a grid.
LABEL_WIDTH = 240


def labelled_grid(rows: list[list[Image.Image]], labels: list[str], scale: int = 1) -> Image.Image:
    """Paste ``rows[r][c]`` at row ``r``, column ``c`` (tiles upscaled ``scale``×, nearest) beside
    ``labels[r]`` (first 40 characters) on a white sheet."""
    side = rows[0][0].width * scale
    columns = max(len(row) for row in rows)
    grid = Image.new("RGB", (LABEL_WIDTH + side * columns, side * len(rows)), "white")
    draw = ImageDraw.Draw(grid)
    for r, (row, label) in enumerate(zip(rows, labels, strict=True)):
        draw.text((4, r * side + side // 2 - 5), label[:40], fill="black")
        for c, tile in enumerate(row):
            if scale != 1:
                tile = tile.resize((side, side), Image.NEAREST)
            grid.paste(tile.convert("RGB"), (LABEL_WIDTH + c * side, r * side))
    return grid
