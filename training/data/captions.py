"""What every file-based caption dataset (COCO, Flickr8k, CUB, emoji) shares: a list of
:class:`Record` (an image file and its captions) turned into the item contract the DF-GAN trainer
uses, ``(image [3, imsize, imsize] in [-1, 1], caption)``.

Captions are normalised as DF-GAN does it: lower-cased ``\\w+`` tokens (:func:`training.text.tokenize`)
joined by single spaces, cut to ``max_tokens`` words when that is positive.

Two ways to pair images with their several captions (``pairing``):

``"random"`` (DF-GAN's)
    One item per image; every access draws one of its captions at random. :attr:`captions` holds
    each image's *first* caption (one per item); :attr:`all_captions` every caption, which the
    DF-GAN trainer embeds up front and then looks up for whichever caption an item returns.
``"all"``
    One item per (image, caption) pair, so ``captions[i]`` is always item ``i``'s caption; an epoch
    is then ``captions_per_image`` times longer.
"""

from __future__ import annotations

import random
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from PIL import Image

from training.data.transforms import Colour, ImageTransform, bbox_crop, open_rgb
from training.text.tokenize import tokenize

Pairing = Literal["random", "all"]


class DatasetFilesMissing(FileNotFoundError, ValueError):
    """A dataset's files are not where they should be; the message shows the expected layout.

    Also a ``ValueError``, which is what callers of ``get_dataset`` (the train commands, the training
    worker) already turn into a message for the user."""

    def __init__(self, name: str, data_dir: Path | None, missing: Path | str, layout: str) -> None:
        where = data_dir if data_dir is not None else "(no --data-dir given)"
        super().__init__(
            f"{name} dataset: {missing} not found under {where}.\n"
            f"Expected layout (nothing is downloaded; put the files there first):\n{layout.rstrip()}"
        )


@dataclass(frozen=True)
class Record:
    """One image file, its captions, and optionally a ``(x, y, width, height)`` box to crop to."""

    image: Path
    captions: tuple[str, ...]
    bbox: tuple[float, float, float, float] | None = None


def normalise_caption(text: str, max_tokens: int = 0) -> str:
    """DF-GAN's caption cleaning: lower-cased word tokens, at most ``max_tokens`` (0 = all)."""
    return " ".join(tokenize(text, max_tokens))


def require(path: Path, name: str, data_dir: Path | None, layout: str) -> Path:
    """``path`` if it exists, else :class:`DatasetFilesMissing` naming it and the layout."""
    if not path.exists():
        raise DatasetFilesMissing(name, data_dir, path, layout)
    return path


class CaptionedImages(torch.utils.data.Dataset):
    """Image files with captions, served as ``(image tensor in [-1, 1], caption)`` items.

    ``records`` whose image file is missing are dropped with a warning; captions that are empty
    after normalisation are dropped, and so are images left with none. ``limit`` keeps the first
    ``limit`` images (for quick runs). ``train`` turns on the random crop and flip; ``seed`` seeds
    them and the caption draws, so two datasets built alike return identical items in the same
    order of access.
    """

    #: Prompts for the trainer's per-epoch sample grid; subclasses give their own.
    sample_prompts: list[str] = ["a photo of a dog", "a red car on a street"]
    name = "captions"

    def __init__(
        self,
        records: Sequence[Record],
        imsize: int = 64,
        *,
        train: bool = True,
        max_tokens: int = 0,
        pairing: Pairing = "random",
        seed: int = 0,
        limit: int | None = None,
        flip: bool = True,
        background: Colour = (255, 255, 255),
    ) -> None:
        if pairing not in ("random", "all"):
            raise ValueError(f"pairing must be 'random' or 'all', not {pairing!r}")
        kept: list[Record] = []
        missing = 0
        for record in records:
            if limit is not None and len(kept) >= limit:
                break
            if not record.image.is_file():
                missing += 1
                continue
            captions = tuple(c for c in (normalise_caption(t, max_tokens) for t in record.captions) if c)
            if captions:
                kept.append(Record(record.image, captions, record.bbox))
        if missing:
            warnings.warn(f"{self.name}: {missing} image file(s) listed but not found; skipped", stacklevel=2)
        if not kept:
            raise ValueError(f"{self.name}: no image with a caption found ({missing} listed files missing)")
        self.records = kept
        self.imsize, self.train, self.pairing, self.max_tokens = imsize, train, pairing, max_tokens
        self.background = background
        self.transform = ImageTransform(imsize, train=train, flip=flip)
        self.rng = random.Random(seed)
        if pairing == "all":
            self.pairs = [(i, j) for i, r in enumerate(kept) for j in range(len(r.captions))]
        else:
            self.pairs = [(i, 0) for i in range(len(kept))]
        self.captions: list[str] = [kept[i].captions[j] for i, j in self.pairs]

    def __len__(self) -> int:
        return len(self.pairs)

    @property
    def all_captions(self) -> list[str]:
        """Every caption of every image (what items can return), for embedding up front."""
        return [c for record in self.records for c in record.captions]

    def load_image(self, image_index: int) -> Image.Image:
        """Image ``image_index`` (an index into :attr:`records`) as RGB, cropped to its box if it has
        one; large JPEGs are decoded at a reduced size no smaller than the transform needs."""
        record = self.records[image_index]
        if record.bbox is not None:  # the box is in full-resolution pixels: no draft decoding
            return bbox_crop(open_rgb(record.image, self.background), record.bbox)
        return open_rgb(record.image, self.background, draft=self.transform.load_size)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, str]:
        image_index, caption_index = self.pairs[index]
        captions = self.records[image_index].captions
        if self.pairing == "random":
            caption_index = self.rng.randrange(len(captions))
        image = self.transform(self.load_image(image_index), self.rng)
        return image, captions[caption_index]
