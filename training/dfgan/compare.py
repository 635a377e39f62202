"""An "old model vs new model" picture: the same prompts and noise seeds through two generators.

Two labelled rows per prompt (old, then new), one column per seed, so an admin sees at a glance what a
training run changed. Used by the train task at the end of a run (``worker/train_task.py``).
"""

from __future__ import annotations

import io
from collections.abc import Sequence

from PIL import Image, ImageDraw

from training.dfgan.checkpoint import LoadedGenerator
from training.images import to_pil

COMPARE_SEEDS = (0, 1, 2, 3)
LABEL_WIDTH = 260
MAX_PROMPTS = 4


def compare_grid(
    old: LoadedGenerator,
    new: LoadedGenerator,
    prompts: Sequence[str],
    seeds: Sequence[int] = COMPARE_SEEDS,
) -> Image.Image:
    """Rows ``old: <prompt>`` and ``new: <prompt>`` for each prompt (at most :data:`MAX_PROMPTS`),
    one column per seed; tiles are scaled to the larger of the two models' sizes."""
    prompts = list(prompts)[:MAX_PROMPTS]
    side = max(old.config.imsize, new.config.imsize)
    grid = Image.new("RGB", (LABEL_WIDTH + side * len(seeds), 2 * side * len(prompts)), "white")
    draw = ImageDraw.Draw(grid)
    for p, prompt in enumerate(prompts):
        for k, (tag, model) in enumerate((("old", old), ("new", new))):
            top = (2 * p + k) * side
            draw.text((4, top + side // 2 - 12), f"{tag}: {model.version}"[:42], fill="black")
            draw.text((4, top + side // 2 + 2), prompt[:42], fill="dimgray")
            for c, tile in enumerate(to_pil(model.draw_rows([prompt], seeds)[0])):
                if tile.size != (side, side):
                    tile = tile.resize((side, side), Image.Resampling.NEAREST)
                grid.paste(tile, (LABEL_WIDTH + c * side, top))
        if p:
            draw.line([(0, 2 * p * side), (grid.width, 2 * p * side)], fill="gray")
    return grid


def png_bytes(image: Image.Image) -> bytes:
    """``image`` as PNG bytes."""
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()
