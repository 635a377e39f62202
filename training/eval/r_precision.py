"""R-precision: does a generated image match its own caption better than random other captions?

As AttnGAN and DF-GAN report it (R = 1): for each image, rank its true caption together with 99
mismatched captions by the cosine similarity of the DAMSM image feature and sentence features; the
score is the fraction of images whose true caption ranks first, averaged over ``repeats`` seeded
draws of the mismatched captions (mean and standard deviation across the draws). Chance level is
1 / ``candidates``.

"Mismatched" means *different*: a caption whose words equal the true one's (after tokenising) is
never drawn as a wrong answer. On the shapes dataset there are only 180 distinct captions, so the
99 wrong captions are drawn from the other 179.

Run ``python -m training.eval.r_precision --help`` to score real shapes images, noise, or a DF-GAN
checkpoint from the command line.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import numpy as np
import torch
import torch.nn.functional as F
import typer
from PIL import Image

from training.images import ImageGenerator, seeded_batches
from training.shipped import SHIPPED_DAMSM
from training.text.damsm.checkpoint import MatchingEncoders, images_to_tensor, load_encoders
from training.text.tokenize import tokenize

if TYPE_CHECKING:
    from training.dfgan.checkpoint import LoadedGenerator

#: The encoder pair that ships with the project, trained on the shapes dataset.
SHIPPED_ENCODERS = SHIPPED_DAMSM


def load_matching_encoders(
    folder: str | Path | None = None, device: str | torch.device = "cpu"
) -> MatchingEncoders:
    """The DAMSM encoders in ``folder`` (default: the shipped shapes encoders), frozen, eval mode."""
    return load_encoders(folder if folder is not None else SHIPPED_ENCODERS, device)


@torch.inference_mode()
def sentence_features(encoders: MatchingEncoders, captions: list[str], batch_size: int = 256) -> torch.Tensor:
    """Unit-length sentence features ``[len(captions), D]`` on the CPU."""
    rows = [
        encoders.encode_text(captions[i : i + batch_size])[1].cpu()
        for i in range(0, len(captions), batch_size)
    ]
    return F.normalize(torch.cat(rows), dim=1)


@torch.inference_mode()
def image_features(
    encoders: MatchingEncoders, images: torch.Tensor | Sequence[Image.Image], batch_size: int = 64
) -> torch.Tensor:
    """Unit-length global image features ``[N, D]`` on the CPU, for images in [-1, 1] or PIL."""
    rows = []
    for i in range(0, len(images), batch_size):
        chunk = images[i : i + batch_size]
        batch = chunk if isinstance(chunk, torch.Tensor) else images_to_tensor(list(chunk))
        rows.append(encoders.encode_images(batch)[1].cpu())
    return F.normalize(torch.cat(rows), dim=1)


def r_precision_from_features(
    image_feats: torch.Tensor,
    caption_feats: torch.Tensor,
    true_index: torch.Tensor,
    candidates: int = 100,
    seed: int = 0,
    repeats: int = 3,
) -> dict[str, float | int | list[float]]:
    """R-precision of images ``[N, D]`` against a pool of *distinct* captions ``[P, D]``; image ``n``'s
    caption is pool row ``true_index[n]``. Each repeat draws ``candidates - 1`` wrong pool rows per
    image (seeded by ``seed`` and the repeat number); a hit is the true caption scoring strictly
    above all of them."""
    n, pool = len(image_feats), len(caption_feats)
    if candidates < 2 or candidates > pool:
        raise ValueError(f"need 2 <= candidates <= {pool} distinct captions, got candidates={candidates}")
    image_feats = F.normalize(image_feats.float(), dim=1)
    caption_feats = F.normalize(caption_feats.float(), dim=1)
    true_index = true_index.long()
    sims = image_feats @ caption_feats.t()  # [N, P]
    true_sims = sims.gather(1, true_index[:, None])
    scores = []
    for repeat in range(repeats):
        rng = torch.Generator().manual_seed(seed * 1_000_003 + repeat)
        # A random order of the pool for each image with the true caption sorted last: the first
        # candidates - 1 entries are a uniform draw, without replacement, of the wrong captions.
        keys = torch.rand(n, pool, generator=rng)
        keys.scatter_(1, true_index[:, None], 2.0)
        wrong = keys.argsort(dim=1)[:, : candidates - 1]
        hits = true_sims[:, 0] > sims.gather(1, wrong).max(dim=1).values
        scores.append(hits.float().mean().item())
    return {
        "r_precision": float(np.mean(scores)),
        "r_precision_std": float(np.std(scores)),
        "per_repeat": scores,
        "images": n,
        "pool": pool,
        "candidates": candidates,
        "chance": 1 / candidates,
    }


def _caption_key(caption: str) -> str:
    # Two captions with the same tokens get the same sentence feature: treat them as one caption.
    return " ".join(tokenize(caption))


def r_precision(
    images: torch.Tensor | Sequence[Image.Image],
    captions: list[str],
    encoders: MatchingEncoders | None = None,
    candidates: int = 100,
    seed: int = 0,
    pool: list[str] | None = None,
    repeats: int = 3,
    batch_size: int = 64,
) -> dict[str, float | int | list[float]]:
    """R-precision of ``images`` (``[N, 3, H, W]`` in [-1, 1], or PIL) against their ``captions``.

    Wrong captions are drawn from ``pool`` (default: the distinct ``captions`` themselves), never
    equal to the true one. ``encoders`` defaults to the shipped shapes encoders. Returns
    ``r_precision`` (mean over repeats), ``r_precision_std``, ``per_repeat``, ``images``, ``pool``
    (distinct captions), ``candidates`` and ``chance``.
    """
    if len(images) != len(captions):
        raise ValueError(f"{len(images)} images but {len(captions)} captions")
    encoders = encoders or load_matching_encoders()
    feats = image_features(encoders, images, batch_size)
    return _score_features(feats, captions, encoders, candidates, seed, pool, repeats)


def r_precision_of_generator(
    generate: ImageGenerator,
    captions: list[str],
    encoders: MatchingEncoders | None = None,
    seed: int = 12345,
    batch_size: int = 64,
    candidates: int = 100,
    pool: list[str] | None = None,
    repeats: int = 3,
) -> dict[str, float | int | list[float]]:
    """Generate one image per caption with ``generate(captions, seeds)`` (image ``i`` gets seed
    ``seed + i``, as :func:`training.dfgan.evaluate.evaluate_shapes` uses), then score them with
    :func:`r_precision`. Candidate draws are seeded by ``seed`` too."""
    encoders = encoders or load_matching_encoders()
    # Features batch by batch, so no more than one batch of images is held at once.
    batches = seeded_batches(generate, captions, seed, batch_size)
    feats = [image_features(encoders, images, batch_size) for images in batches]
    return _score_features(torch.cat(feats), captions, encoders, candidates, seed, pool, repeats)


def _score_features(
    feats: torch.Tensor,
    captions: list[str],
    encoders: MatchingEncoders,
    candidates: int,
    seed: int,
    pool: list[str] | None,
    repeats: int,
) -> dict[str, float | int | list[float]]:
    distinct: dict[str, str] = {}
    for caption in [*(pool or []), *captions]:
        distinct.setdefault(_caption_key(caption), caption)
    keys = list(distinct)
    row = {key: i for i, key in enumerate(keys)}
    true_index = torch.tensor([row[_caption_key(c)] for c in captions])
    caption_feats = sentence_features(encoders, [distinct[k] for k in keys])
    return r_precision_from_features(feats, caption_feats, true_index, candidates, seed, repeats)


def shapes_r_precision(
    generate: ImageGenerator,
    count: int = 1000,
    seed: int = 12345,
    encoders: MatchingEncoders | None = None,
    batch_size: int = 64,
    candidates: int = 100,
    repeats: int = 3,
) -> dict[str, float | int | list[float]]:
    """R-precision of a generator on ``count`` shapes captions (all 180 combinations, balanced, in
    the order and with the noise seeds :func:`training.dfgan.evaluate.evaluate_shapes` uses);
    wrong captions come from all 180 shapes captions."""
    from training.data.shapes import all_specs, make_specs

    captions = [s.caption for s in make_specs(count, seed)]
    pool = [s.caption for s in all_specs()]
    return r_precision_of_generator(generate, captions, encoders, seed, batch_size, candidates, pool, repeats)


def dfgan_generator(loaded: LoadedGenerator) -> ImageGenerator:
    """``generate(captions, seeds)`` for a DF-GAN checkpoint: :meth:`LoadedGenerator.draw`."""
    return loaded.draw


# --- command line ---------------------------------------------------------------------------------

app = typer.Typer(help=__doc__.split("\n\n")[0], add_completion=False)


@app.command()
def main(
    source: Annotated[str, typer.Option(help="real (rendered shapes) | noise | dfgan")] = "real",
    checkpoint: Annotated[
        str | None, typer.Option(help="DF-GAN folder for --source dfgan; default: configured/shipped.")
    ] = None,
    encoders_dir: Annotated[
        Path | None, typer.Option("--encoders", help="DAMSM folder; default: the shipped one.")
    ] = None,
    count: Annotated[int, typer.Option(min=1, help="Images to score.")] = 1000,
    seed: Annotated[int, typer.Option(help="Seed of captions, images and candidate draws.")] = 12345,
    candidates: Annotated[int, typer.Option(min=2, help="True caption + this many minus one.")] = 100,
    repeats: Annotated[int, typer.Option(min=1, help="Draws of the wrong captions.")] = 3,
    threads: Annotated[int, typer.Option(help="CPU threads for torch (0 = torch's default).")] = 1,
) -> None:
    """Score real shapes images (the ceiling), uniform noise (the floor), or a DF-GAN checkpoint."""
    from training.data.shapes import ShapesDataset, all_specs

    if threads > 0:
        torch.set_num_threads(threads)
    encoders = load_matching_encoders(encoders_dir)
    pool = [s.caption for s in all_specs()]
    if source == "dfgan":
        from training.dfgan.checkpoint import load_generator
        from training.shipped import default_dfgan_checkpoint as resolve_default_checkpoint

        folder = resolve_default_checkpoint(checkpoint)
        generate = dfgan_generator(load_generator(folder, "cpu"))
        result = shapes_r_precision(generate, count, seed, encoders, candidates=candidates, repeats=repeats)
        label = f"dfgan {folder or 'random-init'}"
    elif source in ("real", "noise"):
        data = ShapesDataset(count=count, seed=seed)
        if source == "real":
            images = torch.stack([data[i][0] for i in range(count)])
        else:
            images = torch.rand(count, 3, 64, 64, generator=torch.Generator().manual_seed(seed)) * 2 - 1
        result = r_precision(images, data.captions, encoders, candidates, seed, pool, repeats)
        label = source
    else:
        raise typer.BadParameter("choose real, noise or dfgan", param_hint="--source")
    typer.echo(
        f"{label}: R-precision {result['r_precision']:.4f} ± {result['r_precision_std']:.4f} "
        f"({result['images']} images, {result['candidates']} candidates from {result['pool']} captions, "
        f"{repeats} draws; chance {result['chance']:.3f})"
    )


if __name__ == "__main__":
    app()
