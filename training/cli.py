"""``imaginebot train`` and ``imaginebot eval``: the DF-GAN training and evaluation commands.

Mount on the main typer app in one of two ways::

    from training.cli import eval_command, train_command
    app.command("train")(train_command)
    app.command("eval")(eval_command)

or run standalone: ``python -m training.cli train --help`` (this module's ``app``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import torch
import typer
from rich.console import Console

app = typer.Typer(help="Train and evaluate DF-GAN.", no_args_is_help=True)


@app.command("train")
def train_command(
    dataset: Annotated[str, typer.Option(help="Dataset name, e.g. shapes.")] = "shapes",
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
    data_dir: Annotated[Path | None, typer.Option(help="Where file-based datasets live.")] = None,
    device: Annotated[str, typer.Option(help="auto | cpu | cuda")] = "auto",
    threads: Annotated[int, typer.Option(help="CPU threads for torch (0 = torch's default).")] = 0,
    ngf: Annotated[int | None, typer.Option(help="Override generator width.")] = None,
    ndf: Annotated[int | None, typer.Option(help="Override discriminator width.")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Override batch size.")] = None,
    version: Annotated[str | None, typer.Option(help="Version label stored in config.json.")] = None,
    tensorboard: Annotated[
        Path | None, typer.Option(help="Also write TensorBoard event files here (needs tensorboard).")
    ] = None,
    bf16: Annotated[
        bool | None,
        typer.Option(
            "--bf16/--no-bf16",
            help="bf16 autocast on a CPU with native bf16 (AVX512-BF16/AMX; float32 elsewhere). "
            "Default: the config's. A resumed run takes it from the command line.",
        ),
    ] = None,
    init_from: Annotated[
        Path | None,
        typer.Option(
            help="Checkpoint folder whose generator weights start the run (a warm start, e.g. the "
            "shipped model); ignored on --resume."
        ),
    ] = None,
) -> None:
    """Train DF-GAN on a dataset; writes checkpoints, loss curve and sample grids under OUT."""
    from training.data import get_dataset
    from training.device import resolve_device
    from training.dfgan.trainer import train

    if threads > 0:
        torch.set_num_threads(threads)
    cfg = _load_config(config)
    for name, value in {
        "epochs": epochs,
        "ngf": ngf,
        "ndf": ndf,
        "batch_size": batch_size,
        "version": version,
        "bf16_on_cpu": bf16,
    }.items():
        if value is not None:
            setattr(cfg, name, value)
    console = Console()
    try:
        data = get_dataset(dataset, data_dir, imsize=cfg.imsize, count=count, seed=cfg.seed)
    except ValueError as err:
        raise typer.BadParameter(str(err), param_hint="--dataset") from err
    result = train(
        cfg,
        data,
        out,
        max_steps=steps,
        resume=resume,
        device=resolve_device(device),
        console=console,
        tensorboard=tensorboard,
        init_from=init_from,
    )
    console.print(
        f"step {result.step} in {result.seconds:.0f}s; checkpoint {result.checkpoint}; "
        f"loss curve {result.loss_curve}; samples {result.sample_grid}"
    )


@app.command("eval")
def eval_command(
    checkpoint: Annotated[
        str | None, typer.Option(help="Checkpoint folder; default: the configured or shipped one.")
    ] = None,
    dataset: Annotated[
        str, typer.Option(help="Answer key: shapes (one shape) or scenes (one or two shapes).")
    ] = "shapes",
    count: Annotated[int, typer.Option(help="Captions to draw (each once).")] = 1000,
    seed: Annotated[int, typer.Option(help="Seed of the evaluation captions and noise.")] = 12345,
    device: Annotated[str, typer.Option(help="auto | cpu | cuda")] = "auto",
    json_out: Annotated[Path | None, typer.Option("--json", help="Also write the figures here.")] = None,
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
    from training.dfgan.evaluate import evaluate_shapes
    from training.shipped import default_dfgan_checkpoint as resolve_default_checkpoint

    if dataset not in ("shapes", "scenes"):
        raise typer.BadParameter("only shapes and scenes have an exact answer key", param_hint="--dataset")
    if dataset == "scenes" and fid_weights is not None:
        raise typer.BadParameter("FID is measured on shapes only", param_hint="--fid-weights")
    if fid_weights is not None and not fid_weights.is_file():
        from training.eval.fid import missing_weights_message

        raise typer.BadParameter(missing_weights_message(fid_weights), param_hint="--fid-weights")
    folder = resolve_default_checkpoint(checkpoint)
    loaded = load_generator(folder, resolve_device(device))
    if dataset == "scenes":
        from training.eval.attributes import scenes_attribute_accuracy
        from training.eval.r_precision import dfgan_generator

        # R-precision's shipped matching encoders know one-shape captions only: not scored here.
        scores = scenes_attribute_accuracy(dfgan_generator(loaded), count=count, seed=seed)
    else:
        scores = evaluate_shapes(loaded, count=count, seed=seed)
    if r_precision and dataset == "shapes":
        from training.eval.r_precision import dfgan_generator, shapes_r_precision

        rp = shapes_r_precision(dfgan_generator(loaded), count=count, seed=seed)
        scores["r_precision"] = float(rp["r_precision"])
        scores["r_precision_std"] = float(rp["r_precision_std"])
    if fid_weights is not None:
        from training.data import get_dataset
        from training.eval.fid import FIDWeightsMissing, generator_fid

        real = get_dataset("shapes", None, imsize=loaded.config.imsize, count=count, seed=seed)
        try:
            scores["fid"] = generator_fid(loaded, real.images, real.captions, fid_weights, seed=seed)
        except FIDWeightsMissing as err:
            raise typer.BadParameter(str(err), param_hint="--fid-weights") from err
    console = Console()
    console.print(f"checkpoint {folder or 'random-init'} ({loaded.version}), {count} captions, seed {seed}")
    for name, value in scores.items():
        console.print(f"  {name:<15} {value:.3f}")
    if grid is not None:
        from training.data.scenes import ScenesDataset
        from training.data.shapes import ShapesDataset
        from training.dfgan.conditioning import sentence_vectors
        from training.dfgan.trainer import sample_grid

        prompts = (ScenesDataset if dataset == "scenes" else ShapesDataset).sample_prompts
        sentences = sentence_vectors(loaded.text_encoder, prompts, loaded.config)
        sample_grid(loaded.netG, sentences, prompts, loaded.config.nz).save(grid)
        console.print(f"sample grid written to {grid}")
    if json_out is not None:
        json_out.write_text(
            json.dumps(
                {"version": loaded.version, "dataset": dataset, "count": count, "seed": seed, **scores},
                indent=2,
            )
        )


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
    from training.data import get_dataset
    from training.data.preprocess import preprocess

    options: dict[str, object] = {"imsize": imsize, "count": count}
    options.update({k: v for k, v in {"split": split, "limit": limit}.items() if v is not None})
    try:
        data = get_dataset(dataset, data_dir, **options)
    except ValueError as err:
        raise typer.BadParameter(str(err), param_hint="--dataset") from err
    preprocess(data, out, text_encoder=text_encoder, console=Console())


def _load_config(spec: str):  # noqa: ANN202 - DFGANConfig, imported lazily to keep --help fast
    from training.dfgan.config import PRESETS, DFGANConfig

    if spec in PRESETS:
        return PRESETS[spec]()
    path = Path(spec)
    if not path.is_file():
        raise typer.BadParameter(
            f"{spec!r} is neither a preset ({', '.join(PRESETS)}) nor a file", param_hint="--config"
        )
    return DFGANConfig.load(path)


# Registered here so `python -m training.cli train-damsm` works; the command lives in its own module.
from training.damsm_cli import train_damsm_command  # noqa: E402

app.command("train-damsm")(train_damsm_command)

if __name__ == "__main__":
    app()
