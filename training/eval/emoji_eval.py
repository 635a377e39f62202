"""How well an emoji model draws what it is asked for, and whether it only copies its training images.

Emoji have no exact checker like ``shapes``, so four measures, each against its floor and ceiling:

* **Caption sets** (:func:`caption_sets`): ``seen`` (the first training caption of ``count`` training
  emoji), ``rephrased`` (the same emoji in a phrasing never used in training, "a picture of …"), and
  ``heldout`` (the emoji of the ``heldout`` split, whose pictures and captions training never saw).
* **Retrieval** (:func:`retrieval_accuracy`): is the picture drawn for an emoji's caption nearer (pixel
  RMSE at 32 px) to that emoji's real picture than to 99 other emoji's? Chance 0.01.
* **R-precision** with DAMSM matching encoders trained on the emoji ``train`` split
  (``train-damsm --dataset emoji``), as ``docs/r-precision.md`` describes; the real pictures are the
  ceiling.
* **Nearest neighbours** (:func:`neighbour_check`): each drawn picture's nearest training picture and
  its distance, against how far a real *held-out* emoji is from its nearest training picture (what
  a new picture looks like) and how far training pictures are from each other (what a copy is not).

``python -m training.eval.emoji_eval --help`` runs all of it on a DF-GAN or diffusion folder.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import torch
import torch.nn.functional as F
import typer
from PIL import Image

from training.data.captions import normalise_caption
from training.data.emoji import EmojiDataset, emoji_items, in_split
from training.grid import labelled_grid
from training.images import ImageGenerator, from_uint8, seeded_batches, to_pil

#: Everyday prompts for the sample grid: some are training captions ("a red apple"), most are not.
EVERYDAY_PROMPTS = [
    "a red apple",
    "a smiling cat",
    "a pizza",
    "a dog",
    "a rocket",
    "the sun",
    "a snowman",
    "a birthday cake",
    "a car",
    "a tree",
    "a red heart",
    "a banana",
]
GRID_SEEDS = (0, 1, 2, 3)
#: Side at which pictures are compared (the diffusion model's native size).
COMPARE_SIZE = 32


@dataclass(frozen=True)
class EvalCaption:
    """A caption to draw and the emoji (index into :func:`emoji_items`) it names."""

    caption: str
    item: int


def caption_sets(data_dir: Path | None, count: int = 200, seed: int = 0) -> dict[str, list[EvalCaption]]:
    """``seen``, ``rephrased`` (same emoji, a phrasing no training caption has) and ``heldout``."""
    items = emoji_items(data_dir)
    train = [i for i in range(len(items)) if in_split(i, "train")]
    trained_on = {normalise_caption(c) for i in train for c in items[i]["captions"]}
    picked = sorted(random.Random(seed).sample(train, min(count, len(train))))
    rephrased = [
        EvalCaption(c, i)
        for i in picked
        if (c := items[i]["heldout_captions"][0]) and normalise_caption(c) not in trained_on
    ]
    return {
        "seen": [EvalCaption(items[i]["captions"][0], i) for i in picked],
        "rephrased": rephrased,
        "heldout": [
            EvalCaption(items[i]["captions"][0], i) for i in range(len(items)) if in_split(i, "heldout")
        ],
    }


def real_pictures(data_dir: Path | None) -> torch.Tensor:
    """Every emoji's picture (all splits, :func:`emoji_items` order) at ``COMPARE_SIZE``, in [-1, 1]."""
    data = EmojiDataset(data_dir, COMPARE_SIZE, split="all", train=False, pairing="random")
    return torch.stack([data[i][0] for i in range(len(data.records))])


def to_compare(images: torch.Tensor | list[Image.Image]) -> torch.Tensor:
    """Drawn pictures (a tensor in [-1, 1] or PIL) at ``COMPARE_SIZE`` as ``[N, 3, S, S]`` in [-1, 1]."""
    if not isinstance(images, torch.Tensor):
        pixels = [torch.from_numpy(np.asarray(im.convert("RGB")).copy()).permute(2, 0, 1) for im in images]
        images = from_uint8(torch.stack(pixels))
    images = images.float()
    if images.shape[-1] != COMPARE_SIZE:
        images = F.interpolate(
            images, size=COMPARE_SIZE, mode="bilinear", antialias=True, align_corners=False
        )
    return images.clamp(-1, 1)


def rmse(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pairwise RMSE ``[len(a), len(b)]`` of pictures in [-1, 1], on the 0..1 scale."""
    return torch.cdist(a.flatten(1) / 2, b.flatten(1) / 2) / (a[0].numel() ** 0.5)


def retrieval_accuracy(
    drawn: torch.Tensor, items: list[int], real: torch.Tensor, candidates: int = 100, seed: int = 0
) -> float:
    """Fraction of drawn pictures nearer to their own emoji's real picture than to ``candidates - 1``
    other emoji's (drawn at random, seeded); chance is ``1 / candidates``."""
    distances = rmse(drawn, real)
    rng = random.Random(seed)
    hits = 0
    for row, item in enumerate(items):
        others = rng.sample([j for j in range(len(real)) if j != item], candidates - 1)
        hits += bool((distances[row, item] < distances[row, others]).all())
    return hits / len(items)


def neighbour_check(drawn: torch.Tensor, items: list[int], real: torch.Tensor) -> dict[str, float]:
    """Distances to the nearest *training* picture: of the drawn pictures, of real held-out pictures
    (a new picture) and of training pictures to their nearest other one (how close the data itself
    comes to a copy); plus how often the nearest is the prompted emoji and how often a drawing is
    closer to a training picture than any two training pictures are to each other (a copy)."""
    train = [i for i in range(len(real)) if in_split(i, "train")]
    heldout = [i for i in range(len(real)) if in_split(i, "heldout")]
    to_train = rmse(drawn, real[train])
    nearest, index = to_train.min(dim=1)
    between = rmse(real[train], real[train]).fill_diagonal_(float("inf")).min(dim=1).values
    new = rmse(real[heldout], real[train]).min(dim=1).values
    return {
        "drawn_to_nearest_train_rmse": float(nearest.mean()),
        "heldout_real_to_nearest_train_rmse": float(new.mean()),
        "train_to_nearest_other_train_rmse": float(between.mean()),
        "closest_train_pair_rmse": float(between.min()),
        "copies": float((nearest < between.min()).float().mean()),
        "nearest_is_prompted": sum(train[j] == i for j, i in zip(index.tolist(), items, strict=True))
        / len(items),
    }


def draw_all(generate: ImageGenerator, captions: list[str], seed: int, batch_size: int = 32) -> torch.Tensor:
    """Each caption drawn once (image ``i`` from seed ``seed + i``) at ``COMPARE_SIZE``."""
    return torch.cat([to_compare(b) for b in seeded_batches(generate, captions, seed, batch_size)])


def score_set(
    generate: ImageGenerator,
    captions: list[EvalCaption],
    real: torch.Tensor,
    encoders: Any | None,
    pool: list[str],
    seed: int,
) -> dict[str, Any]:
    """Retrieval, nearest-neighbour figures and (with ``encoders``) R-precision of one caption set,
    with the real pictures' R-precision beside it as the ceiling."""
    texts, items = [c.caption for c in captions], [c.item for c in captions]
    drawn = draw_all(generate, texts, seed)
    scores: dict[str, Any] = {
        "captions": len(texts),
        "retrieval_top1_of_100": retrieval_accuracy(drawn, items, real),
    }
    scores.update(neighbour_check(drawn, items, real))
    if encoders is not None:
        from training.eval.r_precision import r_precision

        up = F.interpolate(drawn, size=64, mode="bilinear", align_corners=False)
        scores["r_precision"] = r_precision(up, texts, encoders, pool=pool, seed=seed)["r_precision"]
        real_up = F.interpolate(real[items], size=64, mode="bilinear", align_corners=False)
        scores["real_r_precision"] = r_precision(real_up, texts, encoders, pool=pool, seed=seed)[
            "r_precision"
        ]
    return scores


def evaluate_emoji(
    generate: ImageGenerator,
    data_dir: Path | None = None,
    encoders_dir: Path | None = None,
    count: int = 200,
    seed: int = 12345,
) -> dict[str, Any]:
    """Every measure of the module docstring, per caption set."""
    items = emoji_items(data_dir)
    real = real_pictures(data_dir)
    encoders = None
    if encoders_dir is not None:
        from training.eval.r_precision import load_matching_encoders

        encoders = load_matching_encoders(encoders_dir)
    sets = caption_sets(data_dir, count)
    pools = {
        "seen": [it["captions"][0] for i, it in enumerate(items) if in_split(i, "train")],
        "rephrased": [it["heldout_captions"][0] for i, it in enumerate(items) if in_split(i, "train")],
        "heldout": [it["captions"][0] for it in items],
    }
    return {name: score_set(generate, caps, real, encoders, pools[name], seed) for name, caps in sets.items()}


def everyday_grid(generate: ImageGenerator, prompts: list[str] = EVERYDAY_PROMPTS) -> Image.Image:
    """Rows: ``prompts``; columns: seeds 0–3; tiles at 64 px."""
    rows = [to_pil(generate([p] * len(GRID_SEEDS), list(GRID_SEEDS))) for p in prompts]
    return labelled_grid([[im.resize((64, 64)) for im in row] for row in rows], prompts)


def neighbour_grid(
    generate: ImageGenerator, data_dir: Path | None, prompts: list[str] = EVERYDAY_PROMPTS
) -> Image.Image:
    """Per prompt: the seed-0 drawing and its three nearest training pictures (pixel RMSE)."""
    real = real_pictures(data_dir)
    train = [i for i in range(len(real)) if in_split(i, "train")]
    drawn = draw_all(generate, prompts, 0)
    order = rmse(drawn, real[train]).argsort(dim=1)[:, :3]
    rows = []
    for row, picks in enumerate(order.tolist()):
        tiles = to_pil(torch.cat([drawn[row : row + 1], real[[train[j] for j in picks]]]))
        rows.append([im.resize((64, 64)) for im in tiles])
    return labelled_grid(rows, [f"{p} | 3 nearest training emoji" for p in prompts])


def load_emoji_generator(engine: str, folder: Path, steps: int = 20, guidance: float = 2.0) -> ImageGenerator:
    """``generate(captions, seeds)`` for a DF-GAN checkpoint or a diffusion pipeline folder."""
    if engine == "dfgan":
        from training.dfgan.checkpoint import load_generator

        return load_generator(folder, "cpu").draw
    from training.diffusion.evaluate import pipeline_generator
    from training.diffusion.pipeline import PixelDiffusionPipeline

    pipe = PixelDiffusionPipeline.from_pretrained(str(folder), local_files_only=True)
    pipe.unet.to(torch.float32)
    pipe.set_progress_bar_config(disable=True)
    return pipeline_generator(pipe, steps, guidance, size=64)


app = typer.Typer(help=__doc__.split("\n\n")[0], add_completion=False)


@app.command()
def main(
    engine: Annotated[str, typer.Option(help="dfgan | diffusion")],
    model: Annotated[Path, typer.Option(help="DF-GAN checkpoint folder or diffusion pipeline folder.")],
    encoders: Annotated[
        Path | None, typer.Option(help="DAMSM folder trained on emoji (R-precision).")
    ] = None,
    count: Annotated[int, typer.Option(min=1, help="Training emoji in the seen / rephrased sets.")] = 200,
    data_dir: Annotated[Path | None, typer.Option(help="Where datasets/emoji is cached.")] = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="Write the figures here.")] = None,
    grid: Annotated[Path | None, typer.Option(help="Write the everyday-prompts grid here.")] = None,
    neighbours: Annotated[Path | None, typer.Option(help="Write the nearest-neighbour grid here.")] = None,
    threads: Annotated[int, typer.Option(help="CPU threads for torch.")] = 1,
    guidance: Annotated[float, typer.Option(help="Diffusion only: classifier-free guidance scale.")] = 2.0,
) -> None:
    """Score an emoji model (see the module docstring) and draw its grids."""
    torch.set_num_threads(threads)
    generate = load_emoji_generator(engine, model, guidance=guidance)
    if grid is not None:
        everyday_grid(generate).save(grid)
    if neighbours is not None:
        neighbour_grid(generate, data_dir).save(neighbours)
    scores = evaluate_emoji(generate, data_dir, encoders, count)
    drawn_with = {"guidance": guidance} if engine == "diffusion" else {}
    text = json.dumps({"engine": engine, "model": str(model), **drawn_with, **scores}, indent=2)
    if json_out is not None:
        json_out.write_text(text + "\n")
    typer.echo(text)


if __name__ == "__main__":
    app()
