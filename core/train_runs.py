"""Training runs: the run record and its store (``ib:trainrun:<id>``), leased like image jobs.

A run is a :class:`TrainRun` record in Redis plus one ``train`` task on queue ``train`` that carries
only the run id. Front-ends create and cancel runs (:mod:`core.training_client`); the training worker
(:mod:`worker.train_task`) claims a run with a lease (:mod:`core.leases`), updates it as it goes
(step, losses, time left), evaluates, and fills in the verdict and the new version.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

from pydantic import BaseModel, Field

from core.ids import is_run_id
from core.jobs import Conversation, JobStatus
from core.leases import LeasedStore

#: The one lock every training run takes: one run at a time, whatever the number of train workers.
LOCK_KEY = "ib:trainrun:lock"
RUN_PREFIX = "ib:trainrun:"
#: A fine-tune's learning rate (DF-GAN's generator, the diffusion UNet), as a fraction of its
#: parent's: small steps away from weights that already draw well (a run's own override wins).
FINETUNE_LR_SCALE = 0.25
#: The pictures a run posts: the loss curve so far at 25/50/75 %, and at the end the loss curve and
#: DF-GAN's old-vs-new grid or the diffusion model's samples (the names the web chat serves).
RUN_PICTURES = ("progress-25", "progress-50", "progress-75", "loss-curve", "old-vs-new", "samples")


#: A training run goes through the same states as an image job (queued, running, done, failed,
#: cancelled; ``.finished`` for the last three).
TrainRunStatus = JobStatus


class TrainRun(BaseModel):
    """The stored state of one retraining run; the single source of truth, kept in Redis."""

    id: str = Field(default_factory=lambda: uuid.uuid4().hex[:16])
    dataset: str
    epochs: int
    max_steps: int | None = None
    count: int | None = Field(default=None, description="Images of a procedural dataset (None: default)")
    eval_count: int = 1000
    force: bool = False
    model: str = Field(default="dfgan", description="dfgan | diffusion")
    from_scratch: bool = Field(
        default=False, description="Random initial weights instead of fine-tuning the model in use"
    )
    config: dict[str, Any] = Field(default_factory=dict, description="DFGANConfig overrides")
    requested_by: str
    conversation: Conversation
    status: TrainRunStatus = TrainRunStatus.QUEUED
    note: str = ""
    created_at: float = Field(default_factory=time.time)
    started_at: float | None = None
    updated_at: float | None = None
    finished_at: float | None = None
    # --- progress ---
    step: int = 0
    total: int | None = None
    losses: dict[str, float] = Field(default_factory=dict)
    eta_s: float | None = None
    resumed_from: int | None = None
    # --- ownership (lease, as for jobs) ---
    worker: str | None = None
    lease_until: float | None = None
    attempts: int = 0
    # --- result ---
    metrics: dict[str, float] = Field(default_factory=dict)
    baseline: float | None = None
    baseline_version: str | None = None
    gate: str | None = Field(default=None, description="passed | failed | skipped | forced")
    gate_note: str = ""
    parent: str | None = None
    version: str | None = None
    promoted: bool = False
    checkpoint: str | None = None
    loss_curve: str | None = None
    sample_grid: str | None = None
    error: str | None = None


def run_key(run_id: str) -> str:
    """Key of a run record."""
    return f"{RUN_PREFIX}{run_id}"


class RunNotFound(Exception):
    """No training run with this id (never existed, or expired)."""


class TrainRunStore(LeasedStore[TrainRun]):
    """Reads, atomically updates and leases :class:`TrainRun` records (see :mod:`core.leases`)."""

    model = TrainRun
    prefix = RUN_PREFIX
    missing = RunNotFound
    gave_up_error = "Gave up after {n} attempts: the training worker kept stopping."

    def valid_id(self, record_id: str) -> bool:
        """Only a well-formed run id names a run (it becomes a key and a folder name)."""
        return is_run_id(record_id)
