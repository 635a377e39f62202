"""Evaluate a diffusion pipeline the way DF-GAN is evaluated: attribute accuracy on ``shapes``,
R-precision with the shipped matching encoders, and drawing speed."""

from __future__ import annotations

import time
from typing import Any

import torch
from PIL import Image

from training.eval.attributes import attribute_scores, draw_scene_captions, draw_shapes_captions
from training.images import ImageGenerator
from training.seeds import seed_generators


def pipeline_generator(pipe: Any, steps: int = 20, guidance: float = 2.0, size: int = 64) -> ImageGenerator:
    """``generate(captions, seeds)`` for a diffusers text-to-image pipeline: one CPU generator per
    seed (as the worker's engine does), ``size`` × ``size`` PIL images."""

    def generate(captions: list[str], seeds: list[int]) -> list[Image.Image]:
        with torch.inference_mode():
            out = pipe(
                list(captions),
                num_inference_steps=steps,
                guidance_scale=guidance,
                generator=seed_generators(seeds),
                height=size,
                width=size,
            )
        return list(out.images)

    return generate


def evaluate_generator(
    generate: ImageGenerator,
    count: int = 1000,
    seed: int = 12345,
    batch_size: int = 64,
    r_precision: bool = True,
    dataset: str = "shapes",
) -> dict[str, Any]:
    """Attribute accuracy and (with ``r_precision``, shapes only) R-precision of the same ``count``
    images of the ``dataset``'s answer key (``shapes`` or ``scenes``), plus ``images_per_s``
    (drawing only, batches of ``batch_size``)."""
    started = time.perf_counter()
    if dataset == "scenes":
        from training.data.scenes import scene_scores

        images, captions = draw_scene_captions(generate, count, seed, batch_size)
        scores: dict[str, Any] = {"images_per_s": count / (time.perf_counter() - started)}
        scores.update(scene_scores(images, captions))
        return scores
    images, captions = draw_shapes_captions(generate, count, seed, batch_size)
    scores = {"images_per_s": count / (time.perf_counter() - started)}
    scores.update(attribute_scores(images, captions))
    if r_precision:
        from training.data.shapes import all_specs
        from training.eval.r_precision import r_precision as score_r_precision

        rp = score_r_precision(images, captions, pool=[s.caption for s in all_specs()], seed=seed)
        scores["r_precision"] = rp["r_precision"]
        scores["r_precision_std"] = rp["r_precision_std"]
    return scores
