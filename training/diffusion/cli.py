"""``imaginebot train-diffusion``: train the small pixel-space diffusion model on a dataset."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import torch
import typer
from rich.console import Console


def train_diffusion_command(
    dataset: Annotated[str, typer.Option(help="Dataset name, e.g. shapes.")] = "shapes",
    config: Annotated[Path | None, typer.Option(help="A DiffusionConfig JSON (default: built-in).")] = None,
    out: Annotated[Path, typer.Option(help="Output folder (pipeline/, state/, samples/).")] = Path(
        "runs/diffusion"
    ),
    steps: Annotated[int | None, typer.Option(help="Train until this many optimiser steps.")] = None,
    resume: Annotated[bool, typer.Option(help="Continue from OUT/state if it exists.")] = False,
    count: Annotated[int, typer.Option(help="Images to generate for procedural datasets.")] = 10_000,
    data_dir: Annotated[Path | None, typer.Option(help="Where file-based datasets live.")] = None,
    device: Annotated[str, typer.Option(help="auto | cpu | cuda")] = "auto",
    threads: Annotated[int, typer.Option(help="CPU threads for torch (0 = torch's default).")] = 0,
    batch_size: Annotated[int | None, typer.Option(help="Override batch size.")] = None,
    version: Annotated[str | None, typer.Option(help="Version label stored in imaginebot.json.")] = None,
) -> None:
    """Train the small text-conditional diffusion model; the EMA weights land in OUT/pipeline as a
    diffusers folder that IMAGINEBOT_DIFFUSION_MODEL can point at."""
    from training.data import get_dataset
    from training.diffusion.config import DiffusionConfig
    from training.diffusion.trainer import train
    from worker.engines.diffusion import resolve_device

    if threads > 0:
        torch.set_num_threads(threads)
    cfg = DiffusionConfig.load(config) if config is not None else DiffusionConfig()
    if batch_size is not None:
        cfg.batch_size = batch_size
    if version is not None:
        cfg.version = version
    if steps is not None:
        cfg.steps = steps
    console = Console()
    try:
        data = get_dataset(dataset, data_dir, imsize=cfg.source_size, count=count, seed=cfg.seed)
    except ValueError as err:
        raise typer.BadParameter(str(err), param_hint="--dataset") from err
    result = train(cfg, data, out, resume=resume, device=resolve_device(device), console=console)
    console.print(
        f"step {result.step} in {result.seconds:.0f}s; pipeline {result.pipeline}; "
        f"loss curve {result.loss_curve}; samples {result.sample_grid}"
    )


if __name__ == "__main__":
    typer.run(train_diffusion_command)
