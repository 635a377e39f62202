"""MS-COCO captions (2014 or 2017 split), read with ``pycocotools`` from local files."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path
from typing import Any

from training.data.captions import CaptionedImages, DatasetFilesMissing, Record, require

LAYOUT = """\
  DATA_DIR/annotations/captions_train2014.json   (or captions_train2017.json; val for --split val)
  DATA_DIR/train2014/COCO_train2014_000000000009.jpg ...   (the folder named like the json's split)"""


def coco_records(data_dir: Path | None, split: str = "train") -> list[Record]:
    """One :class:`Record` per image of COCO's ``split`` (``train`` or ``val``) that has captions."""
    if data_dir is None:
        raise DatasetFilesMissing("coco", data_dir, f"annotations/captions_{split}2014.json", LAYOUT)
    candidates = [data_dir / "annotations" / f"captions_{split}{year}.json" for year in (2014, 2017)]
    annotation = next((p for p in candidates if p.is_file()), None)
    if annotation is None:
        raise DatasetFilesMissing("coco", data_dir, candidates[0].relative_to(data_dir), LAYOUT)
    image_dir = require(data_dir / annotation.stem.removeprefix("captions_"), "coco", data_dir, LAYOUT)
    from pycocotools.coco import COCO

    with contextlib.redirect_stdout(io.StringIO()):  # COCO() prints timing chatter
        coco = COCO(str(annotation))
    records = []
    for image_id in sorted(coco.getImgIds()):
        captions = tuple(a["caption"] for a in coco.imgToAnns.get(image_id, []))
        if captions:
            records.append(Record(image_dir / coco.imgs[image_id]["file_name"], captions))
    return records


class CocoDataset(CaptionedImages):
    """COCO captions: about five captions per image (82,783 train2014 images)."""

    name = "coco"
    sample_prompts = [
        "a man riding a wave on top of a surfboard",
        "a plate of food with broccoli and rice",
        "a red double decker bus driving down a street",
        "a giraffe standing next to a tree",
        "a kitchen with white cabinets and a window",
        "a group of people flying kites on a beach",
        "a cat sleeping on a laptop keyboard",
        "a train traveling down the tracks at sunset",
    ]

    def __init__(self, data_dir: Path | None, imsize: int = 64, split: str = "train", **options: Any) -> None:
        super().__init__(coco_records(data_dir, split), imsize, **options)
