"""What every trainer shows and writes while it runs, written once: the progress bar, ``losses.jsonl``
(and TensorBoard), a plain progress line when the console is not a terminal, and sample grids.

A trainer's loop then reads top to bottom::

    with RunLog(out, "DF-GAN", total, step, console, tensorboard) as log:
        while step < total:
            losses = train_step(...)
            step += 1
            log.step(step, losses, f"D {losses['loss_d']:.3f}")
"""

from __future__ import annotations

import time
from pathlib import Path
from types import TracebackType

import torch
from PIL import Image
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from training.loss_log import TensorBoardLog, append_history, read_history

SAMPLES_DIR = "samples"
LATEST_GRID = "latest.png"


class RunLog:
    """The running record of one training run under ``out``: use as a context manager.

    ``history`` holds the logged rows; on resume it is the rows up to ``step`` (later ones, lost with
    the stopped process, are dropped from ``losses.jsonl`` too).
    """

    def __init__(
        self,
        out: Path,
        name: str,
        total: int,
        step: int = 0,
        console: Console | None = None,
        tensorboard: Path | None = None,
        print_every: int = 50,
    ) -> None:
        self.out, self.name, self.total = out, name, total
        self.console = console or Console()
        self.print_every = print_every
        out.mkdir(parents=True, exist_ok=True)
        self.history = read_history(out / "losses.jsonl", up_to=step)
        self.board = TensorBoardLog(tensorboard)
        self.started, self.start_step = time.monotonic(), step
        columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn()]
        self.bar = Progress(*columns, console=self.console, transient=False)
        self.task = self.bar.add_task(name, total=total, completed=step)

    def __enter__(self) -> RunLog:
        self.bar.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.bar.stop()
        self.board.close()

    @property
    def seconds(self) -> float:
        """Seconds since the log was opened."""
        return time.monotonic() - self.started

    def step(self, step: int, losses: dict[str, float], description: str) -> None:
        """Record ``losses`` of ``step`` (file, TensorBoard), advance the bar showing ``description``,
        and every ``print_every`` steps (and at the last) print a line when output is not a terminal."""
        append_history(self.out / "losses.jsonl", self.history, {"step": step, **losses})
        self.board.scalars(self.history[-1])
        self.bar.update(self.task, advance=1, description=description)
        if not self.console.is_terminal and (step % self.print_every == 0 or step == self.total):
            rate = self.seconds / max(step - self.start_step, 1)
            figures = " ".join(f"{k}={v:.4g}" for k, v in losses.items())
            self.console.print(f"step {step}/{self.total} {figures} {rate:.2f}s/step")

    def grid(self, grid: Image.Image, name: str, step: int) -> Path:
        """Save a sample grid as ``samples/<name>`` and ``samples/latest.png``, and to TensorBoard."""
        path = self.save_latest(grid).with_name(name)
        grid.save(path)
        self.board.image("samples", grid, step)
        return path

    def save_latest(self, grid: Image.Image) -> Path:
        """Save ``grid`` as ``samples/latest.png`` only; returns that path."""
        self.latest_grid.parent.mkdir(exist_ok=True)
        grid.save(self.latest_grid)
        return self.latest_grid

    @property
    def latest_grid(self) -> Path:
        """``samples/latest.png``: the newest sample grid."""
        return self.out / SAMPLES_DIR / LATEST_GRID


def epoch_batch(length: int, batch_size: int, seed: int, step: int) -> list[int]:
    """Dataset indices of the batch after ``step`` steps: epoch ``e`` visits the items in the order
    ``randperm(length)`` seeded with ``seed + e``, so the data order depends only on (seed, step)
    and a resumed run sees the same batches."""
    per_epoch = max(length // batch_size, 1)
    epoch, k = divmod(step, per_epoch)
    order = torch.randperm(length, generator=torch.Generator().manual_seed(seed + epoch))
    return order[k * batch_size : (k + 1) * batch_size].tolist()
