"""Text-image agreement of a DF-GAN checkpoint, measured with the shapes dataset's exact checker."""

from __future__ import annotations

from training.dfgan.checkpoint import LoadedGenerator
from training.eval.attributes import shapes_attribute_accuracy


def evaluate_shapes(
    loaded: LoadedGenerator, count: int = 1000, seed: int = 12345, batch_size: int = 64
) -> dict[str, float]:
    """Draw ``count`` shapes captions (all combinations, balanced; order and noise from ``seed``)
    once each and return the fraction of images showing the caption's colour, shape, size,
    position, and all four at once (``"all"``)."""
    return shapes_attribute_accuracy(loaded.draw, count, seed, batch_size)
