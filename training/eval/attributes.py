"""Attribute accuracy on ``shapes`` for any image generator (DF-GAN, diffusion, ...).

The generator draws one image per caption; the dataset's exact checker reads colour, shape, size and
position back and compares them with the caption.
"""

from __future__ import annotations

from PIL import Image

from training.data.shapes import ATTRIBUTES, check_image, make_specs
from training.images import ImageGenerator, seeded_batches, to_pil


def shapes_attribute_accuracy(
    generate: ImageGenerator, count: int = 1000, seed: int = 12345, batch_size: int = 64
) -> dict[str, float]:
    """Draw ``count`` shapes captions (all 180 combinations, balanced, order from ``seed``; image
    ``i`` gets seed ``seed + i``) and return the fraction of images that show the caption's colour,
    shape, size and position, and all four at once (``"all"``)."""
    images, captions = draw_shapes_captions(generate, count, seed, batch_size)
    return attribute_scores(images, captions)


def draw_shapes_captions(
    generate: ImageGenerator, count: int = 1000, seed: int = 12345, batch_size: int = 64
) -> tuple[list[Image.Image], list[str]]:
    """The evaluation images: ``count`` balanced shapes captions, image ``i`` drawn with seed ``seed + i``."""
    return draw_captions(generate, [s.caption for s in make_specs(count, seed)], seed, batch_size)


def draw_captions(
    generate: ImageGenerator, captions: list[str], seed: int = 12345, batch_size: int = 64
) -> tuple[list[Image.Image], list[str]]:
    """One image per caption, image ``i`` drawn with seed ``seed + i``, in batches."""
    images = [
        image for batch in seeded_batches(generate, captions, seed, batch_size) for image in to_pil(batch)
    ]
    return images, captions


def attribute_scores(images: list[Image.Image], captions: list[str]) -> dict[str, float]:
    """Fraction of ``images`` showing each attribute of their caption, and all four (``"all"``)."""
    hits = dict.fromkeys([*ATTRIBUTES, "all"], 0)
    for image, caption in zip(images, captions, strict=True):
        result = check_image(image, caption)
        for name, ok in result.items():
            hits[name] += ok
        hits["all"] += all(result.values())
    return {name: value / max(len(images), 1) for name, value in hits.items()}


def draw_scene_captions(
    generate: ImageGenerator, count: int = 1000, seed: int = 12345, batch_size: int = 64
) -> tuple[list[Image.Image], list[str]]:
    """The scenes answer key's images: ``count`` captions (half one-object, half two-object, from
    ``seed``), image ``i`` drawn with seed ``seed + i``."""
    from training.data.scenes import answer_key

    return draw_captions(generate, [c for _, c in answer_key(count, seed)], seed, batch_size)


def scenes_attribute_accuracy(
    generate: ImageGenerator, count: int = 1000, seed: int = 12345, batch_size: int = 64
) -> dict[str, float]:
    """The scenes answer key scored by its exact checker: one-object figures (``single_colour`` ...
    ``single_all``), two-object figures (``pair_colour`` ... ``pair_relation``, ``pair_all``) and
    ``all``; see :func:`training.data.scenes.scene_scores`."""
    from training.data.scenes import scene_scores

    images, captions = draw_scene_captions(generate, count, seed, batch_size)
    return scene_scores(images, captions)
