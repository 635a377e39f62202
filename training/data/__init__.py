"""Training datasets, looked up by name with :func:`get_dataset`.

=============  ==========================================================================================
``shapes``     procedural coloured shapes with an exact answer key (nothing read from ``data_dir``)
``scenes``     procedural scenes of one shape or two shapes and their relation, with an exact answer key
``emoji``      Noto Color Emoji renders captioned with Unicode names, cached under
               ``data_dir/datasets/emoji`` (needs Debian's ``fonts-noto-color-emoji`` the first time)
``coco``       MS-COCO captions: ``data_dir/annotations/captions_train2014.json`` + ``data_dir/train2014/``
``flickr8k``   ``data_dir/Flickr8k.token.txt`` + ``data_dir/Flicker8k_Dataset/``
``cub``        CUB-200 birds in DF-GAN's ``birds/`` layout (captions in ``text/``, splits in pickles)
``cache``      a file written by ``python -m training.cli preprocess``; ``data_dir`` is that file
=============  ==========================================================================================

File-based datasets read only from ``data_dir`` (never from the network) and raise
:class:`~training.data.captions.DatasetFilesMissing`, whose message shows the expected layout, when
their files are not there. Every dataset gives items ``(image [3, imsize, imsize] in [-1, 1], caption)``
and has ``captions`` and ``sample_prompts``, which is what the DF-GAN trainer needs. The caption
datasets take ``split``, ``train`` (random crop + flip, else centre crop), ``max_tokens``, ``pairing``
(``random``: one item per image with a random caption each time; ``all``: one item per caption),
``seed`` and ``limit`` (first N images); see docs/datasets.md.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from training.data.shapes import ShapesDataset

if TYPE_CHECKING:
    import torch


class CaptionedDataset(Protocol):
    """What the trainers need from a dataset: items ``(image [3, H, W] in [-1, 1], caption)``, every
    caption up front (so their embeddings can be computed once) and the sample grids' prompts."""

    captions: list[str]
    sample_prompts: list[str]

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> tuple[torch.Tensor, str]: ...


def _shapes(
    data_dir: Path | None, imsize: int = 64, count: int = 10_000, seed: int = 0, **_: Any
) -> ShapesDataset:
    # Procedural: nothing to read from data_dir.
    return ShapesDataset(count=count, imsize=imsize, seed=seed)


def _scenes(data_dir: Path | None, imsize: int = 64, count: int = 20_000, seed: int = 0, **_: Any) -> Any:
    from training.data.scenes import ScenesDataset

    return ScenesDataset(count=count, imsize=imsize, seed=seed)


def _files(module: str, cls: str) -> Callable[..., Any]:
    # Imported on first use: the caption datasets pull in NLTK (and it scipy), which costs about
    # two seconds that a shapes run or a --help should not pay.
    def build(data_dir: Path | None, imsize: int = 64, count: int | None = None, **options: Any) -> Any:
        # ``count`` sizes procedural datasets (the train commands always pass it); a file dataset
        # has the size its files give, and ``limit`` is the way to take fewer images.
        return getattr(importlib.import_module(module), cls)(data_dir, imsize, **options)

    return build


def _cache(data_dir: Path | None, imsize: int | None = None, count: int | None = None, **options: Any) -> Any:
    from training.data.preprocess import CachedDataset

    if data_dir is None:
        raise ValueError("the cache dataset needs the cache file as data_dir")
    dataset = CachedDataset(data_dir, **options)
    if imsize is not None and imsize != dataset.imsize:
        raise ValueError(f"{data_dir} holds {dataset.imsize}px images, not {imsize}px; preprocess again")
    return dataset


_REGISTRY: dict[str, Callable[..., Any]] = {
    "shapes": _shapes,
    "scenes": _scenes,
    "emoji": _files("training.data.emoji", "EmojiDataset"),
    "coco": _files("training.data.coco", "CocoDataset"),
    "flickr8k": _files("training.data.flickr8k", "Flickr8kDataset"),
    "cub": _files("training.data.cub", "CubDataset"),
    "cache": _cache,
}


def dataset_names() -> list[str]:
    """Names :func:`get_dataset` accepts."""
    return sorted(_REGISTRY)


def get_dataset(name: str, data_dir: str | Path | None = None, **options: Any) -> Any:
    """The dataset called ``name`` (a registered name, never a path), built with ``options``
    (``imsize``, ``count``, ``seed`` ...). Raises ``ValueError`` for an unknown name."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown dataset {name!r}; known: {', '.join(dataset_names())}")
    return _REGISTRY[name](Path(data_dir) if data_dir is not None else None, **options)
