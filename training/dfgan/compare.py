"""An "old model vs new model" picture: the same prompts and noise seeds through two generators.

Two labelled rows per prompt (old, then new), one column per seed, so an admin sees at a glance what a
training run changed. Used by the train task at the end of a run (``worker/train_task.py``).
"""

from __future__ import annotations

import io
from collections.abc import Sequence

import torch
from PIL import Image, ImageDraw

from training.dfgan.checkpoint import LoadedGenerator
from training.dfgan.conditioning import sentence_vectors

COMPARE_SEEDS = (0, 1, 2, 3)
LABEL_WIDTH = 260
MAX_PROMPTS = 4


def _row(model: LoadedGenerator, prompt: str, seeds: Sequence[int], side: int) -> list[Image.Image]:
    """``len(seeds)`` pictures of ``prompt`` from ``model``, each noise vector drawn from its seed."""
    config = model.config
    device = next(model.netG.parameters()).device
    noise = torch.stack([torch.randn(config.nz, generator=torch.Generator().manual_seed(s)) for s in seeds])
    with torch.no_grad():
        sentence = sentence_vectors(model.text_encoder, [prompt], config).to(device)
        images = model.netG(noise.to(device), sentence.expand(len(seeds), -1))
    pixels = ((images.clamp(-1, 1) + 1) * 127.5).round().byte().cpu()
    tiles = [Image.fromarray(p.permute(1, 2, 0).numpy()) for p in pixels]
    return [t if t.size == (side, side) else t.resize((side, side), Image.Resampling.NEAREST) for t in tiles]


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
            for c, tile in enumerate(_row(model, prompt, seeds, side)):
                grid.paste(tile, (LABEL_WIDTH + c * side, top))
        if p:
            draw.line([(0, 2 * p * side), (grid.width, 2 * p * side)], fill="gray")
    return grid


def png_bytes(image: Image.Image) -> bytes:
    """``image`` as PNG bytes."""
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()
