"""The trainers' loss log (``losses.jsonl``, one JSON line per step) and loss-curve PNGs.

Shared by the DF-GAN, diffusion and DAMSM trainers. Plots use a bare matplotlib ``Figure`` (Agg), so
they never touch pyplot's global state or need a display.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from PIL import Image


def read_history(path: Path, up_to: int) -> list[dict[str, float]]:
    """The rows of ``path`` with ``step <= up_to``; the file is rewritten to just those, because steps
    after the last checkpoint were lost with the process and a resumed run logs them again."""
    if not path.is_file():
        return []
    history = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    history = [h for h in history if h["step"] <= up_to]
    path.write_text("".join(json.dumps(h) + "\n" for h in history))
    return history


def append_history(path: Path, history: list[dict[str, float]], row: dict[str, float]) -> None:
    """Add ``row`` (with its ``step``) to ``history`` and as one line to ``path``."""
    history.append(row)
    with path.open("a") as f:
        f.write(json.dumps(row) + "\n")


def plot_curves(
    history: list[dict[str, float]],
    keys: Sequence[str],
    path: Path,
    ylabel: str = "loss",
    log: bool = False,
    title: str | None = None,
) -> None:
    """Plot ``keys`` of ``history`` (rows with a ``step``) against steps as a moving average.

    The window is 1% of the rows, so a long run draws a readable trend rather than per-step noise.
    """
    fig = Figure(figsize=(7, 4))
    ax = fig.add_subplot()
    if history:
        steps = np.array([h["step"] for h in history])
        window = max(1, len(history) // 100)
        for key in keys:
            values = np.array([h.get(key, np.nan) for h in history], dtype=np.float64)
            smooth = np.convolve(values, np.ones(window) / window, mode="valid")
            ax.plot(steps[window - 1 :], smooth, label=key)
        ax.legend()
    if log:
        ax.set_yscale("log")
    if title:
        ax.set_title(title)
    ax.set_xlabel("step")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


class TensorBoardLog:
    """Optional TensorBoard event files (``--tensorboard DIR``): every logged step's scalars and the
    sample grids. A no-op when ``log_dir`` is None; needs the ``tensorboard`` package otherwise."""

    def __init__(self, log_dir: Path | None) -> None:
        self.writer = None
        if log_dir is None:
            return
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as exc:  # torch imports it lazily; the package itself is optional
            raise RuntimeError(
                "TensorBoard logs need the tensorboard package: pip install tensorboard "
                "(or leave out --tensorboard)"
            ) from exc
        self.writer = SummaryWriter(str(log_dir))

    def scalars(self, row: dict[str, float]) -> None:
        """Log every value of ``row`` except ``step`` at ``row["step"]``."""
        if self.writer is not None:
            for key, value in row.items():
                if key != "step":
                    self.writer.add_scalar(f"loss/{key}", value, int(row["step"]))

    def image(self, tag: str, image: Image.Image, step: int) -> None:
        """Log a PIL image (e.g. the sample grid)."""
        if self.writer is not None:
            self.writer.add_image(tag, np.asarray(image.convert("RGB")), step, dataformats="HWC")

    def close(self) -> None:
        """Flush and close the event file."""
        if self.writer is not None:
            self.writer.close()
