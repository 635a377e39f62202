"""Cache a dataset's decoded images, caption tokens and (optionally) sentence embeddings in one
``.pt`` file, and serve items from it with :class:`CachedDataset` (``get_dataset("cache", FILE)``).

Decoding and resizing JPEGs dominates a CPU epoch on COCO or CUB; the cache stores each image once,
already cropped to its bounding box and resized to the square the random crop moves in
(``imsize * 76 / 64``), as uint8. Training from the cache keeps the random crop and flip.

The file holds only tensors, strings, numbers and lists, and is read with ``torch.load(...,
weights_only=True)``, which refuses anything else.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from training.data.captions import CaptionedImages, DatasetFilesMissing, Pairing
from training.data.transforms import random_crop_flip
from training.images import from_uint8, to_uint8
from training.text.tokenize import tokenize

FORMAT = "imaginebot-caption-cache"
VERSION = 1
CACHE_LAYOUT = """\
  FILE.pt, written by: python -m training.cli preprocess --dataset NAME --data-dir DIR --out FILE.pt
  (the cache dataset's data dir is that file itself, not a folder)"""


def _progress(console: Console) -> Progress:
    columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn()]
    return Progress(*columns, console=console)


def _images_and_captions(dataset: Any, bar: Progress) -> tuple[torch.Tensor, list[list[str]], bool]:
    """uint8 images ``[N, 3, S, S]``, each image's captions, and whether flipping is allowed."""
    if isinstance(dataset, CaptionedImages):
        count, side = len(dataset.records), dataset.transform.load_size
        captions = [list(r.captions) for r in dataset.records]
        flip = dataset.transform.flip

        def pixels(i: int) -> np.ndarray:
            return np.asarray(dataset.transform.base(dataset.load_image(i)), dtype=np.uint8)
    else:
        # Any (image tensor in [-1, 1], caption) dataset, e.g. shapes: stored as it comes, unflipped
        # (a mirrored "on the left" would contradict its caption).
        count, side = len(dataset), int(dataset[0][0].shape[-1])
        captions = [[dataset.captions[i]] for i in range(count)]
        flip = False

        def pixels(i: int) -> np.ndarray:
            return to_uint8(dataset[i][0]).permute(1, 2, 0).numpy()

    images = torch.empty(count, 3, side, side, dtype=torch.uint8)
    task = bar.add_task("images", total=count)
    for i in range(count):
        images[i] = torch.from_numpy(pixels(i).copy()).permute(2, 0, 1)
        bar.advance(task)
    return images, captions, flip


def preprocess(
    dataset: Any,
    out: str | Path,
    *,
    text_encoder: str | None = None,
    device: str = "cpu",
    console: Console | None = None,
) -> Path:
    """Write ``dataset`` (a :class:`CaptionedImages` or any ``(image, caption)`` dataset with
    ``captions``) to ``out``: images, captions, their tokens, and with ``text_encoder`` (e.g.
    ``minilm``) one embedding per caption. Returns ``out``."""
    console = console or Console()
    out = Path(out)
    with _progress(console) as bar:
        images, captions, flip = _images_and_captions(dataset, bar)
        flat = [c for per_image in captions for c in per_image]
        embeddings = None
        if text_encoder:
            from training.text.encoders import load_text_encoder

            encoder = load_text_encoder(text_encoder, device)
            task = bar.add_task(f"captions ({text_encoder})", total=len(flat))
            chunks = []
            for start in range(0, len(flat), 256):
                chunks.append(encoder.encode(flat[start : start + 256]).cpu())
                bar.advance(task, len(chunks[-1]))
            embeddings = torch.cat(chunks)
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(
        {
            "format": FORMAT,
            "version": VERSION,
            "name": getattr(dataset, "name", type(dataset).__name__),
            "imsize": int(dataset.imsize),
            "flip": flip,
            "images": images,
            "captions": captions,
            "tokens": [[tokenize(c) for c in per_image] for per_image in captions],
            "sample_prompts": list(dataset.sample_prompts),
            "text_encoder": text_encoder or "",
            "embeddings": embeddings,
        },
        out,
    )
    console.print(f"{len(images)} images, {len(flat)} captions -> {out}")
    return out


class CachedDataset(torch.utils.data.Dataset):
    """Items ``(image [3, imsize, imsize] in [-1, 1], caption)`` from a :func:`preprocess` file.

    ``pairing``, ``train`` and ``seed`` mean what they do for
    :class:`~training.data.captions.CaptionedImages`. :attr:`tokens` holds each image's caption tokens
    and :attr:`embeddings` (``None`` unless the file was written with a text encoder) one row per
    caption in image order, i.e. rows ``caption_rows[i]`` belong to image ``i``.
    """

    def __init__(
        self, path: str | Path, *, train: bool = True, pairing: Pairing = "random", seed: int = 0
    ) -> None:
        path = Path(path)
        if not path.is_file():
            raise DatasetFilesMissing("cache", path, "a preprocessed .pt file", CACHE_LAYOUT)
        data = torch.load(path, weights_only=True)
        if not isinstance(data, dict) or data.get("format") != FORMAT or data.get("version") != VERSION:
            raise ValueError(f"{path} is not a version-{VERSION} {FORMAT} file")
        if pairing not in ("random", "all"):
            raise ValueError(f"pairing must be 'random' or 'all', not {pairing!r}")
        self.name = f"cache:{data['name']}"
        self.imsize: int = data["imsize"]
        self.images: torch.Tensor = data["images"]
        self.image_captions: list[list[str]] = data["captions"]
        self.tokens: list[list[list[str]]] = data["tokens"]
        self.sample_prompts: list[str] = data["sample_prompts"]
        self.text_encoder: str = data["text_encoder"]
        self.embeddings: torch.Tensor | None = data["embeddings"]
        self.flip, self.train, self.pairing = bool(data["flip"]), train, pairing
        self.rng = random.Random(seed)
        starts = np.cumsum([0] + [len(c) for c in self.image_captions])
        self.caption_rows = [list(range(starts[i], starts[i + 1])) for i in range(len(self.image_captions))]
        if pairing == "all":
            self.pairs = [(i, j) for i, c in enumerate(self.image_captions) for j in range(len(c))]
        else:
            self.pairs = [(i, 0) for i in range(len(self.image_captions))]
        self.captions: list[str] = [self.image_captions[i][j] for i, j in self.pairs]

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, str]:
        image_index, caption_index = self.pairs[index]
        captions = self.image_captions[image_index]
        if self.pairing == "random":
            caption_index = self.rng.randrange(len(captions))
        rng = self.rng if self.train else None
        pixels = random_crop_flip(self.images[image_index], self.imsize, rng, self.flip)
        return from_uint8(pixels), captions[caption_index]
