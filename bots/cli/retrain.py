"""``imaginebot retrain``: queue a training run on the ``train`` queue and follow it in the terminal
(or cancel one)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from core.command_line import console, fail, shared_settings

if TYPE_CHECKING:
    from core.train_runs import TrainRun
    from core.training_client import TrainingClient

app = typer.Typer(help="Retrain a model from the command line.", no_args_is_help=True)


@app.command()
def retrain(
    dataset: str = typer.Option("shapes", help="Dataset name (see IMAGINEBOT_DATASETS)."),
    steps: int = typer.Option(None, help="Stop after this many optimiser steps (default: epochs)."),
    epochs: int = typer.Option(10, help="Epochs when --steps is not given."),
    force: bool = typer.Option(False, "--force", help="Promote even when the evaluation gate fails."),
    from_scratch: bool = typer.Option(
        False, "--from-scratch", help="Start from random weights (default: fine-tune the model in use)."
    ),
    model: str = typer.Option("dfgan", help="Which model to retrain: dfgan or diffusion."),
    config: Path = typer.Option(  # noqa: B008
        None, help="JSON file of DFGANConfig overrides (ngf, ndf, batch_size, checkpoint_every, …)."
    ),
    count: int = typer.Option(None, help="Images of a procedural dataset (default 10000)."),
    eval_count: int = typer.Option(1000, help="Captions the evaluation gate draws."),
    detach: bool = typer.Option(False, "--detach", help="Queue the run and return at once."),
    cancel: str = typer.Option(None, help="Cancel the training run with this id instead."),
    timeout: float = typer.Option(24 * 3600, help="Seconds to follow the run."),
) -> None:
    """Retrain DF-GAN on the train queue (a worker started with --queues train) and follow it."""
    from bots.cli.conversation import cli_caller, cli_service
    from core.conversation import Retrain, RetrainCancel, RetrainCancelled, RetrainQueued

    settings = shared_settings()
    service, caller = cli_service(settings), cli_caller(settings)
    if cancel is not None:
        # Refused: the id is not one, there is no such run, or it has finished.
        cancelled = service.handle(caller, RetrainCancel(cancel))
        if not isinstance(cancelled, RetrainCancelled):
            raise fail(cancelled.text, 1)
        console.print(cancelled.text)
        return
    overrides = json.loads(config.read_text()) if config is not None else None
    action = Retrain(
        dataset, epochs, from_scratch, model,
        max_steps=steps, force=force, config=overrides, count=count, eval_count=eval_count,
    )  # fmt: skip
    queued = service.handle(caller, action)
    if not isinstance(queued, RetrainQueued):
        raise fail(queued.text)
    run = queued.run
    console.print(f"queued training run {run.id} (cancel: imaginebot retrain --cancel {run.id})")
    if not detach:
        _report(follow_training(service.training, run.id, timeout))


def _report(run: TrainRun) -> None:
    """The finished run's outcome: score, gate, promoted or not, where its curve and samples are;
    exits 1 when it did not finish well."""
    if run.status.value != "done":
        raise fail(f"training run {run.id} {run.status.value}: {run.error or run.note}", 1)
    score = f"score {run.metrics['all']:.3f}" if "all" in run.metrics else "no score"
    verdict = "[green]promoted[/green]" if run.promoted else "[yellow]not promoted[/yellow]"
    console.print(f"{run.version}: {score}, gate {run.gate}, {verdict}. {run.gate_note}")
    console.print(f"loss curve {run.loss_curve}\nsamples {run.sample_grid}")


def follow_training(client: TrainingClient, run_id: str, timeout_s: float) -> TrainRun:
    """Show the run's progress (a rich bar with losses and time left) until it finishes; exits when
    ``timeout_s`` passes first (the run goes on)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    deadline = time.monotonic() + timeout_s
    columns = [
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[eta]}"),
    ]
    with Progress(*columns, console=console) as bar:
        task = bar.add_task("waiting for a train worker", total=None, eta="")
        while True:
            run = client.status(run_id)
            if run.status.finished:
                if run.total:
                    bar.update(task, total=run.total, completed=run.step, eta="")
                return run
            if time.monotonic() > deadline:
                raise fail(f"stopped following after {timeout_s:.0f} s; run {run_id} goes on", 1)
            if run.status.value == "running" and run.total:
                losses = " ".join(f"{k.removeprefix('loss_').upper()} {v:.3f}" for k, v in run.losses.items()
                                  if k.startswith("loss_"))  # fmt: skip
                eta = f"{run.eta_s:.0f} s left" if run.eta_s is not None else ""
                bar.update(task, description=f"DF-GAN {losses}", total=run.total, completed=run.step, eta=eta)
            elif run.note:
                bar.update(task, description=run.note)
            time.sleep(0.5)


if __name__ == "__main__":
    app()
