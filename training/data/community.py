"""Community datasets (made by admins in chat, :mod:`core.datasets`) as training datasets.

A community dataset is ``<data_dir>/community/<name>/``: ``<item id>.png`` pictures and
``index.jsonl`` with one caption each. :class:`CommunityDataset` serves them like any captioned
dataset (``(image [3, imsize, imsize] in [-1, 1], caption)``). :func:`training_dataset` is what the
train workers call for ``/retrain dataset:NAME``: a community dataset when ``NAME`` is one, else the
built-in dataset of that name (:func:`training.data.get_dataset`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from core.datasets import NAME, DatasetStore, read_index
from training.data import dataset_names, get_dataset
from training.data.captions import CaptionedImages, Record

#: How many of a community dataset's captions the trainers' sample grids show.
SAMPLE_PROMPTS = 8


class CommunityDataset(CaptionedImages):
    """The pictures and captions of community dataset ``name`` under ``data_dir``.

    Options as :class:`~training.data.captions.CaptionedImages` (``train``, ``seed``, ``limit`` …);
    ``count`` (the procedural datasets' size) is ignored. Raises ``ValueError`` for a name that is
    not a community dataset.
    """

    def __init__(self, name: str, data_dir: str | Path, imsize: int = 64, **options: Any) -> None:
        store = DatasetStore(Path(data_dir))
        if not store.exists(name):
            raise ValueError(f"no community dataset {name!r} under {store.root}")
        folder = store.root / name
        items = read_index(folder)
        records = [Record(folder / f"{item.id}.png", (item.caption,)) for item in items]
        options.pop("count", None)
        self.name = name
        super().__init__(records, imsize, **options)
        self.sample_prompts = [item.caption for item in items[:SAMPLE_PROMPTS]]


def is_community(name: str, data_dir: str | Path | None) -> bool:
    """Whether ``name`` is a community dataset under ``data_dir`` (and not a built-in name)."""
    return (
        data_dir is not None
        and NAME.fullmatch(name) is not None
        and name not in dataset_names()
        and DatasetStore(Path(data_dir)).exists(name)
    )


def available(name: str, data_dir: str | Path | None) -> bool:
    """Whether this training worker can train on ``name``: a built-in or a community dataset."""
    return name in dataset_names() or is_community(name, data_dir)


def training_dataset(name: str, data_dir: str | Path | None, **options: Any) -> Any:
    """The dataset ``/retrain dataset:NAME`` trains on: community dataset ``name`` when there is
    one under ``data_dir``, else the built-in one (``ValueError`` for neither)."""
    if data_dir is not None and is_community(name, data_dir):
        return CommunityDataset(name, data_dir, **options)
    return get_dataset(name, data_dir, **options)
