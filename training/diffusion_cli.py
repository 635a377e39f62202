"""``train-diffusion`` and ``export-diffusion``: train the small pixel-space diffusion model and
export a run's pipeline to ship.

Registered on :data:`training.cli.app`; run ``python -m training.cli train-diffusion --help``.
(``eval-diffusion`` scores a pipeline loaded exactly as the workers load it: :mod:`worker.eval_cli`.)
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from training.cli_options import (
    Bf16,
    DataDir,
    Dataset,
    Device,
    Tensorboard,
    Threads,
    load_dataset,
    set_threads,
)


def train_diffusion_command(
    dataset: Dataset = "shapes",
    config: Annotated[Path | None, typer.Option(help="A DiffusionConfig JSON (default: built-in).")] = None,
    out: Annotated[Path, typer.Option(help="Output folder (pipeline/, state/, samples/).")] = Path(
        "runs/diffusion"
    ),
    steps: Annotated[int | None, typer.Option(help="Train until this many optimiser steps.")] = None,
    resume: Annotated[bool, typer.Option(help="Continue from OUT/state if it exists.")] = False,
    count: Annotated[int, typer.Option(help="Images to generate for procedural datasets.")] = 10_000,
    data_dir: DataDir = None,
    device: Device = "auto",
    threads: Threads = 0,
    batch_size: Annotated[int | None, typer.Option(help="Override batch size.")] = None,
    version: Annotated[str | None, typer.Option(help="Version label stored in imaginebot.json.")] = None,
    tensorboard: Tensorboard = None,
    bf16: Bf16 = None,
    init_from: Annotated[
        Path | None,
        typer.Option(
            help="Pipeline folder whose UNet weights start the run (a warm start, e.g. the "
            "shipped model); ignored on --resume."
        ),
    ] = None,
) -> None:
    """Train the small text-conditional diffusion model; the EMA weights land in OUT/pipeline as a
    diffusers folder that IMAGINEBOT_DIFFUSION_MODEL can point at."""
    from training.device import resolve_device
    from training.diffusion.config import DiffusionConfig
    from training.diffusion.trainer import train

    set_threads(threads)
    cfg = DiffusionConfig.load(config) if config is not None else DiffusionConfig()
    overrides = {"batch_size": batch_size, "version": version, "steps": steps, "bf16_on_cpu": bf16}
    for name, value in overrides.items():
        if value is not None:
            setattr(cfg, name, value)
    data = load_dataset(dataset, data_dir, imsize=cfg.source_size, count=count, seed=cfg.seed)
    console = Console()
    result = train(
        cfg, data, out, resume=resume, device=resolve_device(device), console=console,
        tensorboard=tensorboard, init_from=init_from,
    )  # fmt: skip
    console.print(
        f"step {result.step} in {result.seconds:.0f}s; pipeline {result.pipeline}; "
        f"loss curve {result.loss_curve}; samples {result.sample_grid}"
    )


def export_diffusion_command(
    run: Annotated[Path, typer.Option(help="A train-diffusion output folder (its pipeline/ is exported).")],
    to: Annotated[Path, typer.Option(help="Target folder, e.g. training/shipped_models/<name>.")],
    half: Annotated[bool, typer.Option(help="Store the UNet in float16 (half the size).")] = True,
) -> None:
    """Copy a run's EMA pipeline to a folder to ship or to point IMAGINEBOT_DIFFUSION_MODEL at."""
    from training.diffusion.trainer import PIPELINE_DIR, export_pipeline

    source = run / PIPELINE_DIR
    if not (source / "model_index.json").is_file():
        raise typer.BadParameter(
            f"{source} holds no pipeline yet (no checkpoint written)", param_hint="--run"
        )
    folder = export_pipeline(source, to, half=half)
    size = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file()) / 1e6
    Console().print(f"exported {source} to {folder} ({size:.1f} MB)")
