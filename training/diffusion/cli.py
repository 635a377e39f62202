"""``imaginebot train-diffusion`` and ``imaginebot eval-diffusion``: train and score the small
pixel-space diffusion model (or score any diffusers pipeline folder)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import torch
import typer
from rich.console import Console

app = typer.Typer(help="Train and evaluate the diffusion model.", no_args_is_help=True)


@app.command("train-diffusion")
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
            help="Pipeline folder whose UNet weights start the run (a warm start, e.g. the "
            "shipped model); ignored on --resume."
        ),
    ] = None,
) -> None:
    """Train the small text-conditional diffusion model; the EMA weights land in OUT/pipeline as a
    diffusers folder that IMAGINEBOT_DIFFUSION_MODEL can point at."""
    from training.data import get_dataset
    from training.device import resolve_device
    from training.diffusion.config import DiffusionConfig
    from training.diffusion.trainer import train

    if threads > 0:
        torch.set_num_threads(threads)
    cfg = DiffusionConfig.load(config) if config is not None else DiffusionConfig()
    if batch_size is not None:
        cfg.batch_size = batch_size
    if version is not None:
        cfg.version = version
    if steps is not None:
        cfg.steps = steps
    if bf16 is not None:
        cfg.bf16_on_cpu = bf16
    console = Console()
    try:
        data = get_dataset(dataset, data_dir, imsize=cfg.source_size, count=count, seed=cfg.seed)
    except ValueError as err:
        raise typer.BadParameter(str(err), param_hint="--dataset") from err
    result = train(
        cfg,
        data,
        out,
        resume=resume,
        device=resolve_device(device),
        console=console,
        tensorboard=tensorboard,
        init_from=init_from,
    )
    console.print(
        f"step {result.step} in {result.seconds:.0f}s; pipeline {result.pipeline}; "
        f"loss curve {result.loss_curve}; samples {result.sample_grid}"
    )


@app.command("export-diffusion")
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


@app.command("eval-diffusion")
def eval_diffusion_command(
    model: Annotated[
        str | None, typer.Option(help="Diffusers folder; default: the configured or shipped model.")
    ] = None,
    dataset: Annotated[
        str, typer.Option(help="Answer key: shapes (one shape) or scenes (one or two shapes).")
    ] = "shapes",
    count: Annotated[int, typer.Option(min=1, help="Captions to draw (each once).")] = 1000,
    seed: Annotated[int, typer.Option(help="Seed of the captions' order and of the noise.")] = 12345,
    steps: Annotated[int, typer.Option(min=1, help="Denoising steps.")] = 20,
    guidance: Annotated[float, typer.Option(help="Classifier-free guidance scale.")] = 2.0,
    batch_size: Annotated[int, typer.Option(min=1, help="Images per pipeline call.")] = 50,
    r_precision: Annotated[bool, typer.Option(help="Also score R-precision (shipped encoders).")] = True,
    device: Annotated[str, typer.Option(help="auto | cpu | cuda")] = "auto",
    threads: Annotated[int, typer.Option(help="CPU threads for torch (0 = torch's default).")] = 0,
    json_out: Annotated[Path | None, typer.Option("--json", help="Also write the figures here.")] = None,
    grid: Annotated[Path | None, typer.Option(help="Also write a sample grid PNG here.")] = None,
) -> None:
    """Score a diffusion pipeline on the shapes answer key (colour, shape, size and position read back
    by the exact checker, R-precision, images/s) or, with --dataset scenes, on the scenes answer key
    (one-object and two-object figures, the relation included)."""
    import json

    from core.settings import Settings
    from training.data.scenes import ScenesDataset
    from training.data.shapes import ShapesDataset

    if dataset not in ("shapes", "scenes"):
        raise typer.BadParameter("only shapes and scenes have an exact answer key", param_hint="--dataset")
    from training.diffusion.evaluate import evaluate_generator, pipeline_generator
    from training.diffusion.trainer import sample_grid
    from worker.engines.diffusion import DiffusionEngine, ModelNotAvailable

    if threads > 0:
        torch.set_num_threads(threads)
    settings = Settings()
    try:
        engine = DiffusionEngine(model or settings.diffusion_model, settings.data_dir, device=device)
    except ModelNotAvailable as err:
        raise typer.BadParameter(str(err), param_hint="--model") from err
    console = Console()
    console.print(
        f"model {engine.info.version} ({engine.info.extra['pipeline']}), {count} captions, seed {seed}"
    )
    generate = pipeline_generator(engine.pipe, steps=steps, guidance=guidance)
    scores = evaluate_generator(
        generate, count=count, seed=seed, batch_size=batch_size, r_precision=r_precision, dataset=dataset
    )
    for name, value in scores.items():
        console.print(f"  {name:<15} {value:.3f}")
    if grid is not None:
        prompts = (ScenesDataset if dataset == "scenes" else ShapesDataset).sample_prompts
        sample_grid(engine.pipe, prompts, steps=steps, guidance=guidance).save(grid)
        console.print(f"sample grid written to {grid}")
    if json_out is not None:
        figures = {
            "version": engine.info.version,
            "dataset": dataset,
            "count": count,
            "seed": seed,
            "steps": steps,
        }
        json_out.write_text(json.dumps({**figures, "guidance": guidance, **scores}, indent=2))


if __name__ == "__main__":
    app()
