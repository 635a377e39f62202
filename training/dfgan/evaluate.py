"""Text-image agreement of a DF-GAN checkpoint, measured with the shapes dataset's exact checker."""

from __future__ import annotations

import torch
from PIL import Image

from training.data.shapes import ATTRIBUTES, check_image, make_specs
from training.dfgan.checkpoint import LoadedGenerator
from training.dfgan.conditioning import sentence_vectors


def evaluate_shapes(
    loaded: LoadedGenerator, count: int = 1000, seed: int = 12345, batch_size: int = 64
) -> dict[str, float]:
    """Draw ``count`` shapes captions (all combinations, balanced; order and noise from ``seed``)
    once each and return the fraction of images showing the caption's colour, shape, size,
    position, and all four at once (``"all"``)."""
    specs = make_specs(count, seed)
    captions = [s.caption for s in specs]
    config, netG = loaded.config, loaded.netG
    device = next(netG.parameters()).device
    hits = dict.fromkeys([*ATTRIBUTES, "all"], 0)
    for start in range(0, count, batch_size):
        batch = captions[start : start + batch_size]
        with torch.inference_mode():
            sent = sentence_vectors(loaded.text_encoder, batch, config)
            noise = torch.stack(
                [
                    torch.randn(config.nz, generator=torch.Generator().manual_seed(seed + start + i))
                    for i in range(len(batch))
                ]
            )
            images = netG(noise.to(device), sent.to(device))
            pixels = ((images.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).cpu().numpy()
        for array, caption in zip(pixels, batch, strict=True):
            result = check_image(Image.fromarray(array), caption)
            for name, ok in result.items():
                hits[name] += ok
            hits["all"] += all(result.values())
    return {name: value / count for name, value in hits.items()}
