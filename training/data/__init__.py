"""Training datasets, looked up by name with :func:`get_dataset`.

Only ``shapes`` exists today; ``emoji``, ``coco``, ``flickr8k`` and ``cub`` will register here and read
their files from ``data_dir`` (never from the network).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from training.data.shapes import ShapesDataset


def _shapes(
    data_dir: Path | None, imsize: int = 64, count: int = 10_000, seed: int = 0, **_: Any
) -> ShapesDataset:
    # Procedural: nothing to read from data_dir.
    return ShapesDataset(count=count, imsize=imsize, seed=seed)


_REGISTRY: dict[str, Callable[..., Any]] = {"shapes": _shapes}


def dataset_names() -> list[str]:
    """Names :func:`get_dataset` accepts."""
    return sorted(_REGISTRY)


def get_dataset(name: str, data_dir: str | Path | None = None, **options: Any) -> Any:
    """The dataset called ``name`` (a registered name, never a path), built with ``options``
    (``imsize``, ``count``, ``seed`` ...). Raises ``ValueError`` for an unknown name."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown dataset {name!r}; known: {', '.join(dataset_names())}")
    return _REGISTRY[name](Path(data_dir) if data_dir is not None else None, **options)
