"""Flickr8k: 8,000 Flickr photos with five captions each, from the usual Flickr8k_text files."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

from training.data.captions import CaptionedImages, DatasetFilesMissing, Record, require

LAYOUT = """\
  DATA_DIR/Flickr8k.token.txt          lines "1000268201_693b08cb0e.jpg#0<TAB>A child in a pink dress ..."
  DATA_DIR/Flickr_8k.trainImages.txt   (and devImages / testImages: one name a line; not for --split all)
  DATA_DIR/Flicker8k_Dataset/1000268201_693b08cb0e.jpg ...   (or Flickr8k_Dataset/)
  (the .txt files may also sit in DATA_DIR/Flickr8k_text/)"""

_SPLIT_FILES = {
    "train": "Flickr_8k.trainImages.txt",
    "dev": "Flickr_8k.devImages.txt",
    "test": "Flickr_8k.testImages.txt",
}


def _text_file(data_dir: Path, name: str) -> Path:
    for folder in (data_dir, data_dir / "Flickr8k_text"):
        if (folder / name).is_file():
            return folder / name
    raise DatasetFilesMissing("flickr8k", data_dir, name, LAYOUT)


def flickr8k_records(data_dir: Path | None, split: str = "train") -> list[Record]:
    """One :class:`Record` per image of ``split`` (``train``, ``dev``, ``test`` or ``all``), in the
    order of the token file."""
    if split not in (*_SPLIT_FILES, "all"):
        raise ValueError(f"flickr8k split must be one of {', '.join([*_SPLIT_FILES, 'all'])}, not {split!r}")
    if data_dir is None:
        raise DatasetFilesMissing("flickr8k", data_dir, "Flickr8k.token.txt", LAYOUT)
    tokens = _text_file(data_dir, "Flickr8k.token.txt")
    # The archive's folder is misspelt "Flicker8k_Dataset"; some re-packs fix the spelling.
    folders = [data_dir / "Flicker8k_Dataset", data_dir / "Flickr8k_Dataset"]
    image_dir = next((f for f in folders if f.is_dir()), None) or require(
        folders[0], "flickr8k", data_dir, LAYOUT
    )
    wanted: set[str] | None = None
    if split != "all":
        wanted = set(_text_file(data_dir, _SPLIT_FILES[split]).read_text().split())
    captions: dict[str, list[str]] = defaultdict(list)
    for line in tokens.read_text(encoding="utf-8").splitlines():
        key, _, caption = line.partition("\t")
        name = key.rsplit("#", 1)[0].strip()
        if name and caption.strip() and (wanted is None or name in wanted):
            captions[name].append(caption)
    return [Record(image_dir / name, tuple(texts)) for name, texts in captions.items()]


class Flickr8kDataset(CaptionedImages):
    """Flickr8k: 6,000 train / 1,000 dev / 1,000 test images, five captions each."""

    name = "flickr8k"
    sample_prompts = [
        "a black dog runs through the grass",
        "a child in a pink dress is climbing up stairs",
        "a man rides a bike on a dirt path",
        "two girls are playing on the beach",
        "a brown dog is swimming in the water",
        "a group of people standing in the snow",
        "a boy jumps into a swimming pool",
        "a man in a red jacket climbs a rock",
    ]

    def __init__(self, data_dir: Path | None, imsize: int = 64, split: str = "train", **options: Any) -> None:
        super().__init__(flickr8k_records(data_dir, split), imsize, **options)
