"""Loss-curve PNGs shared by the trainers (matplotlib's Agg backend; no display needed)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure


def plot_curves(
    history: list[dict[str, float]], keys: Sequence[str], path: Path, ylabel: str = "loss", log: bool = False
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
    ax.set_xlabel("step")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
