"""CUB-200-2011 birds with the Reed et al. captions, in the folder layout DF-GAN and AttnGAN use."""

from __future__ import annotations

import io
import pickle
from pathlib import Path
from typing import Any

from training.data.captions import CaptionedImages, DatasetFilesMissing, Record, require

LAYOUT = """\
  DATA_DIR/birds/  (or DATA_DIR itself is that folder)
    CUB_200_2011/images/001.Black_footed_Albatross/Black_Footed_Albatross_0046_18.jpg ...
    CUB_200_2011/bounding_boxes.txt and images.txt   (optional; with them images are cropped as DF-GAN does)
    text/001.Black_footed_Albatross/Black_Footed_Albatross_0046_18.txt   (10 captions, one a line)
    train/filenames.pickle, test/filenames.pickle   (lists like '001.Black_footed_Albatross/Black_...')"""


class _ListUnpickler(pickle.Unpickler):
    # filenames.pickle is a plain list of strings; refusing every class import means a tampered
    # file cannot run code when it is read.
    def find_class(self, module: str, name: str) -> Any:
        raise pickle.UnpicklingError(f"filenames.pickle may hold only strings, not {module}.{name}")


def read_filenames(path: Path) -> list[str]:
    """The image keys in a DF-GAN ``filenames.pickle`` (Python 2 or 3 pickle of a list of strings)."""
    names = _ListUnpickler(io.BytesIO(path.read_bytes()), encoding="latin1").load()
    if not isinstance(names, list | tuple):
        raise ValueError(f"{path}: expected a list of file names, got {type(names).__name__}")
    return [n.decode() if isinstance(n, bytes) else str(n) for n in names]


def read_bboxes(cub_dir: Path) -> dict[str, tuple[float, float, float, float]]:
    """``{'001.Black.../Black..._0046_18': (x, y, w, h)}`` from CUB's images.txt + bounding_boxes.txt;
    empty if either file is absent."""
    images, boxes = cub_dir / "images.txt", cub_dir / "bounding_boxes.txt"
    if not (images.is_file() and boxes.is_file()):
        return {}
    key_of = {}
    for line in images.read_text().splitlines():
        if line.strip():
            image_id, path = line.split(maxsplit=1)
            key_of[image_id] = path.strip().rsplit(".", 1)[0]
    out = {}
    for line in boxes.read_text().splitlines():
        if line.strip():
            image_id, x, y, w, h = line.split()
            out[key_of[image_id]] = (float(x), float(y), float(w), float(h))
    return out


def birds_dir(data_dir: Path | None) -> Path:
    """DF-GAN's ``birds`` folder: ``data_dir/birds`` or ``data_dir`` itself."""
    if data_dir is None:
        raise DatasetFilesMissing("cub", data_dir, "birds/", LAYOUT)
    return data_dir / "birds" if (data_dir / "birds").is_dir() else data_dir


def cub_records(data_dir: Path | None, split: str = "train", bbox: bool = True) -> list[Record]:
    """One :class:`Record` per image of ``split`` (``train`` or ``test``); with ``bbox`` and CUB's box
    files present, each carries its bird's bounding box."""
    if split not in ("train", "test"):
        raise ValueError(f"cub split must be 'train' or 'test', not {split!r}")
    birds = birds_dir(data_dir)
    keys = read_filenames(require(birds / split / "filenames.pickle", "cub", data_dir, LAYOUT))
    cub = require(birds / "CUB_200_2011" / "images", "cub", data_dir, LAYOUT).parent
    text = require(birds / "text", "cub", data_dir, LAYOUT)
    boxes = read_bboxes(cub) if bbox else {}
    records = []
    for key in keys:
        caption_file = require(text / f"{key}.txt", "cub", data_dir, LAYOUT)
        captions = tuple(caption_file.read_text(encoding="utf-8", errors="replace").splitlines())
        records.append(Record(cub / "images" / f"{key}.jpg", captions, boxes.get(key)))
    return records


class CubDataset(CaptionedImages):
    """CUB-200 birds: 8,855 train / 2,933 test images (DF-GAN's split), ten captions each."""

    name = "cub"
    sample_prompts = [
        "this bird has a red crown and a short black beak",
        "a small yellow bird with black wings and a white belly",
        "this bird is blue with white on its chest and a pointed bill",
        "a large white bird with a long orange beak",
        "this small brown bird has a spotted breast and a short tail",
        "a black bird with red wing bars perched on a branch",
        "this bird has a bright orange breast and grey wings",
        "a green bird with a long tail and a curved beak",
    ]

    def __init__(
        self, data_dir: Path | None, imsize: int = 64, split: str = "train", bbox: bool = True, **options: Any
    ) -> None:
        super().__init__(cub_records(data_dir, split, bbox), imsize, **options)
