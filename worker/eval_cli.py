"""``imaginebot eval-diffusion``: score a diffusion pipeline on the shapes or scenes answer key.

The pipeline is loaded exactly as the workers load it (:class:`worker.engines.diffusion.DiffusionEngine`:
a local diffusers folder, a hub id in the cache, or the shipped model), so the figures are those of
the model the chat draws with; the scoring itself is training's.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console

from training.cli_options import (
    AnswerKey,
    Device,
    JsonOut,
    Threads,
    answer_key_prompts,
    check_answer_key,
    set_threads,
)

if TYPE_CHECKING:
    from worker.engines.diffusion import DiffusionEngine

app = typer.Typer(help="Score the diffusion model the workers serve.", no_args_is_help=True)


@app.command("eval-diffusion")
def eval_diffusion_command(
    model: Annotated[
        str | None, typer.Option(help="Diffusers folder; default: the configured or shipped model.")
    ] = None,
    dataset: AnswerKey = "shapes",
    count: Annotated[int, typer.Option(min=1, help="Captions to draw (each once).")] = 1000,
    seed: Annotated[int, typer.Option(help="Seed of the captions' order and of the noise.")] = 12345,
    steps: Annotated[int, typer.Option(min=1, help="Denoising steps.")] = 20,
    guidance: Annotated[float, typer.Option(help="Classifier-free guidance scale.")] = 2.0,
    batch_size: Annotated[int, typer.Option(min=1, help="Images per pipeline call.")] = 50,
    r_precision: Annotated[bool, typer.Option(help="Also score R-precision (shipped encoders).")] = True,
    device: Device = "auto",
    threads: Threads = 0,
    json_out: JsonOut = None,
    grid: Annotated[Path | None, typer.Option(help="Also write a sample grid PNG here.")] = None,
) -> None:
    """Score a diffusion pipeline on the shapes answer key (colour, shape, size and position read back
    by the exact checker, R-precision, images/s) or, with --dataset scenes, on the scenes answer key
    (one-object and two-object figures, the relation included)."""
    from training.diffusion.evaluate import evaluate_generator, pipeline_generator
    from training.diffusion.trainer import sample_grid

    check_answer_key(dataset)
    set_threads(threads)
    engine = _load_engine(model, device)
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
        prompts = answer_key_prompts(dataset)
        sample_grid(engine.pipe, prompts, steps=steps, guidance=guidance).save(grid)
        console.print(f"sample grid written to {grid}")
    if json_out is not None:
        figures = {"version": engine.info.version, "dataset": dataset, "count": count, "seed": seed}
        figures |= {"steps": steps, "guidance": guidance, **scores}
        json_out.write_text(json.dumps(figures, indent=2))


def _load_engine(model: str | None, device: str) -> DiffusionEngine:
    """The diffusion engine on ``model`` (default: the configured or shipped one); a model that is
    not there is a bad ``--model``."""
    from core.settings import Settings
    from worker.engines.diffusion import DiffusionEngine, ModelNotAvailable

    settings = Settings()
    try:
        return DiffusionEngine(model or settings.diffusion_model, settings.data_dir, device=device)
    except ModelNotAvailable as err:
        raise typer.BadParameter(str(err), param_hint="--model") from err


if __name__ == "__main__":
    app()
