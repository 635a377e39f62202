"""``train-damsm``: pretrain the DAMSM text/image encoders that R-precision scores generators with.

Registered on :data:`training.cli.app`; run ``python -m training.cli train-damsm --help``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from training.cli_options import DataDir, Dataset, Device, Threads, load_dataset, set_threads


def train_damsm_command(
    dataset: Dataset = "shapes",
    out: Annotated[Path, typer.Option(help="Output folder (encoder files, losses, loss_curve.png).")] = Path(
        "runs/damsm"
    ),
    steps: Annotated[int, typer.Option(min=1, help="Adam steps.")] = 2000,
    count: Annotated[int, typer.Option(min=1, help="Images to generate for procedural datasets.")] = 6000,
    data_dir: DataDir = None,
    batch_size: Annotated[int, typer.Option(min=2, help="Images per step.")] = 48,
    learning_rate: Annotated[float, typer.Option(help="Adam learning rate.")] = 2e-3,
    embedding_dim: Annotated[int, typer.Option(min=1, help="Word embedding width.")] = 64,
    hidden_dim: Annotated[int, typer.Option(min=1, help="LSTM width per direction (features: 2x).")] = 128,
    seed: Annotated[int, typer.Option(help="Seed of weights, dropout, data and its order.")] = 0,
    device: Device = "auto",
    threads: Threads = 0,
    version: Annotated[str | None, typer.Option(help="Version label stored in config.json.")] = None,
) -> None:
    """Pretrain DAMSM encoders (AttnGAN's word + sentence matching losses) on a dataset."""
    from rich.console import Console

    from training.device import resolve_device
    from training.text.damsm.config import DAMSMConfig
    from training.text.damsm.trainer import train_damsm

    set_threads(threads)
    config = DAMSMConfig(
        embedding_dim=embedding_dim,
        hidden_dim=hidden_dim,
        batch_size=batch_size,
        learning_rate=learning_rate,
        seed=seed,
        version=version or "",
    )
    data = load_dataset(dataset, data_dir, imsize=config.imsize, count=count, seed=seed)
    console = Console()
    result = train_damsm(config, data, out, steps, device=resolve_device(device), console=console)
    losses = " ".join(f"{k} {v:.3f}" for k, v in result.final_losses.items() if k != "step")
    console.print(f"{result.steps} steps in {result.seconds:.0f}s ({losses}); encoders in {result.folder}")
