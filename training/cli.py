"""The training command line, one typer app: DF-GAN (``train``, ``eval``), datasets
(``preprocess``), the DAMSM encoders (``train-damsm``) and the diffusion model (``train-diffusion``,
``export-diffusion``).

``imaginebot`` mounts these commands (its table in :mod:`worker.cli`); standalone:
``python -m training.cli train --help``. Torch loads only when a command runs.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console

from training.cli_options import (
    AnswerKey,
    Bf16,
    DataDir,
    Dataset,
    Device,
    JsonOut,
    Tensorboard,
    Threads,
    answer_key_prompts,
    check_answer_key,
    load_dataset,
    set_threads,
)
from training.damsm_cli import train_damsm_command
from training.diffusion_cli import export_diffusion_command, train_diffusion_command

if TYPE_CHECKING:
    from training.dfgan.checkpoint import LoadedGenerator
    from training.dfgan.config import DFGANConfig

app = typer.Typer(help="Train and evaluate the models.", no_args_is_help=True)


@app.command("train")
def train_command(
    dataset: Dataset = "shapes",
    config: Annotated[
        str, typer.Option(help="A DFGANConfig JSON file, or a preset name: default, original.")
    ] = "default",
    out: Annotated[Path, typer.Option(help="Output folder (checkpoint/, samples/, loss_curve.png).")] = Path(
        "runs/dfgan"
    ),
    steps: Annotated[int | None, typer.Option(help="Stop after this many optimiser steps.")] = None,
    epochs: Annotated[int | None, typer.Option(help="Override the config's epochs.")] = None,
    resume: Annotated[bool, typer.Option(help="Continue from OUT/checkpoint if it exists.")] = False,
    count: Annotated[int, typer.Option(help="Images to generate for procedural datasets.")] = 10_000,
    data_dir: DataDir = None,
    device: Device = "auto",
    threads: Threads = 0,
    ngf: Annotated[int | None, typer.Option(help="Override generator width.")] = None,
    ndf: Annotated[int | None, typer.Option(help="Override discriminator width.")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Override batch size.")] = None,
    version: Annotated[str | None, typer.Option(help="Version label stored in config.json.")] = None,
    tensorboard: Tensorboard = None,
    bf16: Bf16 = None,
    init_from: Annotated[
        Path | None,
        typer.Option(
            help="Checkpoint folder whose generator weights start the run (a warm start, e.g. the "
            "shipped model); ignored on --resume."
        ),
    ] = None,
) -> None:
    """Train DF-GAN on a dataset; writes checkpoints, loss curve and sample grids under OUT."""
    from training.device import resolve_device
    from training.dfgan.trainer import train

    set_threads(threads)
    cfg = _load_config(config)
    overrides = {"epochs": epochs, "ngf": ngf, "ndf": ndf, "batch_size": batch_size, "version": version}
    for name, value in {**overrides, "bf16_on_cpu": bf16}.items():
        if value is not None:
            setattr(cfg, name, value)
    data = load_dataset(dataset, data_dir, imsize=cfg.imsize, count=count, seed=cfg.seed)
    console = Console()
    result = train(
        cfg, data, out, max_steps=steps, resume=resume, device=resolve_device(device), console=console,
        tensorboard=tensorboard, init_from=init_from,
    )  # fmt: skip
    console.print(
        f"step {result.step} in {result.seconds:.0f}s; checkpoint {result.checkpoint}; "
        f"loss curve {result.loss_curve}; samples {result.sample_grid}"
    )


@app.command("eval")
def eval_command(
    checkpoint: Annotated[
        str | None, typer.Option(help="Checkpoint folder; default: the configured or shipped one.")
    ] = None,
    dataset: AnswerKey = "shapes",
    count: Annotated[int, typer.Option(help="Captions to draw (each once).")] = 1000,
    seed: Annotated[int, typer.Option(help="Seed of the evaluation captions and noise.")] = 12345,
    device: Device = "auto",
    json_out: JsonOut = None,
    grid: Annotated[
        Path | None, typer.Option(help="Also write a sample grid PNG (fixed prompts x 4 seeds) here.")
    ] = None,
    fid_weights: Annotated[
        Path | None,
        typer.Option(
            help="Also compute FID against COUNT real shapes images, with these local Inception weights "
            "(weights-inception-2015-12-05-6726825d.pth); nothing is downloaded."
        ),
    ] = None,
    r_precision: Annotated[
        bool, typer.Option(help="Also score R-precision with the shipped DAMSM matching encoders.")
    ] = True,
) -> None:
    """Score a checkpoint: the fraction of generated images whose colour, shape, size and position
    (read back by the dataset's exact checker) match the caption, R-precision (1 true caption among
    100), and FID too with --fid-weights."""
    from training.device import resolve_device
    from training.dfgan.checkpoint import load_generator
    from training.shipped import default_dfgan_checkpoint

    _check_eval_options(dataset, fid_weights)
    folder = default_dfgan_checkpoint(checkpoint)
    loaded = load_generator(folder, resolve_device(device))
    scores = _answer_key_scores(loaded, dataset, count, seed, r_precision)
    if fid_weights is not None:
        scores["fid"] = _fid(loaded, fid_weights, count, seed)
    console = Console()
    console.print(f"checkpoint {folder or 'random-init'} ({loaded.version}), {count} captions, seed {seed}")
    for name, value in scores.items():
        console.print(f"  {name:<15} {value:.3f}")
    if grid is not None:
        _dfgan_grid(loaded, dataset, grid)
        console.print(f"sample grid written to {grid}")
    if json_out is not None:
        figures = {"version": loaded.version, "dataset": dataset, "count": count, "seed": seed, **scores}
        json_out.write_text(json.dumps(figures, indent=2))


def _check_eval_options(dataset: str, fid_weights: Path | None) -> None:
    """Refuse, before loading anything, what ``eval`` cannot score."""
    check_answer_key(dataset)
    if dataset == "scenes" and fid_weights is not None:
        raise typer.BadParameter("FID is measured on shapes only", param_hint="--fid-weights")
    if fid_weights is not None and not fid_weights.is_file():
        from training.eval.fid import missing_weights_message

        raise typer.BadParameter(missing_weights_message(fid_weights), param_hint="--fid-weights")


def _answer_key_scores(
    loaded: LoadedGenerator, dataset: str, count: int, seed: int, r_precision: bool
) -> dict[str, float]:
    """The answer key's figures for ``loaded`` (and R-precision on shapes when asked)."""
    from training.dfgan.evaluate import evaluate_shapes
    from training.eval.r_precision import dfgan_generator

    if dataset == "scenes":
        from training.eval.attributes import scenes_attribute_accuracy

        # R-precision's shipped matching encoders know one-shape captions only: not scored here.
        return scenes_attribute_accuracy(dfgan_generator(loaded), count=count, seed=seed)
    scores = evaluate_shapes(loaded, count=count, seed=seed)
    if r_precision:
        from training.eval.r_precision import shapes_r_precision

        rp = shapes_r_precision(dfgan_generator(loaded), count=count, seed=seed)
        scores["r_precision"] = float(rp["r_precision"])
        scores["r_precision_std"] = float(rp["r_precision_std"])
    return scores


def _fid(loaded: LoadedGenerator, weights: Path, count: int, seed: int) -> float:
    """FID of ``loaded`` against ``count`` real shapes images."""
    from training.eval.fid import FIDWeightsMissing, generator_fid

    real = load_dataset("shapes", None, imsize=loaded.config.imsize, count=count, seed=seed)
    try:
        return generator_fid(loaded, real.images, real.captions, weights, seed=seed)
    except FIDWeightsMissing as err:
        raise typer.BadParameter(str(err), param_hint="--fid-weights") from err


def _dfgan_grid(loaded: LoadedGenerator, dataset: str, path: Path) -> None:
    """Write the sample grid of ``dataset``'s fixed prompts to ``path``."""
    from training.dfgan.trainer import sample_grid

    sample_grid(loaded, answer_key_prompts(dataset)).save(path)


@app.command("preprocess")
def preprocess_command(
    dataset: Annotated[str, typer.Option(help="Dataset name: coco, flickr8k, cub, emoji, shapes.")],
    out: Annotated[Path, typer.Option(help="The cache file to write (.pt).")],
    data_dir: Annotated[Path | None, typer.Option(help="Where the dataset's files live.")] = None,
    imsize: Annotated[int, typer.Option(help="Training image size the cache is for.")] = 64,
    split: Annotated[str | None, typer.Option(help="Split of a file dataset (default: train).")] = None,
    text_encoder: Annotated[
        str | None, typer.Option(help="Also store caption embeddings from this encoder, e.g. minilm.")
    ] = None,
    limit: Annotated[int | None, typer.Option(help="Only the first N images.")] = None,
    count: Annotated[int, typer.Option(help="Images to generate for procedural datasets.")] = 10_000,
) -> None:
    """Decode, crop and resize a dataset once and cache images, caption tokens and (with
    --text-encoder) caption embeddings in OUT; train from it with dataset name ``cache``."""
    from training.data.preprocess import preprocess

    options: dict[str, Any] = {"imsize": imsize, "count": count}
    options.update({k: v for k, v in {"split": split, "limit": limit}.items() if v is not None})
    preprocess(load_dataset(dataset, data_dir, **options), out, text_encoder=text_encoder, console=Console())


def _load_config(spec: str) -> DFGANConfig:
    """A preset's config, or one read from a JSON file; anything else is a bad ``--config``."""
    from training.dfgan.config import PRESETS, DFGANConfig

    if spec in PRESETS:
        return PRESETS[spec]()
    path = Path(spec)
    if not path.is_file():
        raise typer.BadParameter(
            f"{spec!r} is neither a preset ({', '.join(PRESETS)}) nor a file", param_hint="--config"
        )
    return DFGANConfig.load(path)


# The commands that live in their own modules, listed after DF-GAN's.
app.command("train-damsm")(train_damsm_command)
app.command("train-diffusion")(train_diffusion_command)
app.command("export-diffusion")(export_diffusion_command)

if __name__ == "__main__":
    app()
