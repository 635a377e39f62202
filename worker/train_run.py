"""What one training run is to the train worker: its folder, what its training part hands back, and
the outcome the task reports."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from core.ids import is_run_id
from worker.runtime import Runtime


@dataclass
class TrainOutcome:
    """What :func:`worker.train_task.run_train` did, for the task wrapper."""

    state: str  # done | failed | cancelled | lost | skipped:<why>
    recheck_in: float | None = None  # someone holds the run or the lock: look again after this many s


@dataclass
class Trained:
    """What a finished training part (DF-GAN or diffusion) hands to the shared end of a run."""

    folder: Path  # what gets registered (a checkpoint or pipeline folder)
    step: int
    loss_curve: Path
    sample_grid: Path
    metrics: dict[str, float]
    baseline_version: str | None
    baseline: float | None
    prompts: list[str]


def run_dir(rt: Runtime, run_id: str) -> Path:
    """``data_dir/runs/<run_id>`` (the id is checked: 16 hex digits)."""
    if not is_run_id(run_id):
        raise ValueError(f"bad run id {run_id[:40]!r}")
    return Path(rt.settings.data_dir) / "runs" / run_id


def checkpoint_step(state_dir: Path) -> int | None:
    """The step of the resumable training state in ``state_dir`` (None when there is none)."""
    meta = state_dir / "training_state.json"
    if not meta.is_file():
        return None
    try:
        return int(json.loads(meta.read_text())["meta"]["step"])
    except (ValueError, KeyError):
        return None
