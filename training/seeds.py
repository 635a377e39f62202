"""The seed contract that reproducibility rests on: a picture's starting noise comes from its seed alone.

Each seed gets its own CPU ``torch.Generator``, so a seed gives the same noise on any device, in any
batch and beside any other request.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


def seed_generators(seeds: Sequence[int]) -> list[torch.Generator]:
    """One CPU generator per seed, seeded with it (what diffusers pipelines take as ``generator=``)."""
    return [torch.Generator("cpu").manual_seed(int(s)) for s in seeds]


def seed_noise(seeds: Sequence[int], shape: int | Sequence[int]) -> torch.Tensor:
    """``[len(seeds), *shape]`` standard-normal noise on the CPU, row ``i`` drawn from ``seeds[i]`` only."""
    size = (shape,) if isinstance(shape, int) else tuple(shape)
    return torch.stack([torch.randn(size, generator=g) for g in seed_generators(seeds)])
