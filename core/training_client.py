"""Retraining runs from the front-ends' side: the run record, submit, status and cancel.

A run is a record in Redis (``ib:trainrun:<id>``, a :class:`TrainRun`) plus one ``train`` task on
queue ``train`` that carries only the run id. The training worker (``worker/train_task.py``) updates
the record as it goes (step, losses, time left), evaluates, and fills in the verdict and the new
version. Only admins may start a run; dataset names come from ``settings.dataset_names`` and are
never used as paths. Nothing here imports torch or the worker.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any

import redis
from celery import Celery
from pydantic import BaseModel, Field

from core.commands import MAX_EPOCHS, MODEL_TITLES, RETRAINABLE, RetrainRequest
from core.errors import InputError
from core.ids import is_run_id
from core.jobs import Conversation, JobStatus
from core.settings import Settings
from core.store import connect, update_record
from core.task_contract import QUEUE_TRAIN, TRAIN_TASK, make_producer

#: The one lock every training run takes: one run at a time, whatever the number of train workers.
LOCK_KEY = "ib:trainrun:lock"
MAX_TRAIN_STEPS = 1_000_000
#: Config overrides a caller may pass (architecture and optimisation knobs; never paths or names).
#: Config overrides an operator may give a run, per model (DFGANConfig / DiffusionConfig fields).
CONFIG_KEYS = {
    "dfgan": frozenset(
        {"imsize", "ngf", "ndf", "batch_size", "lr_g", "lr_d", "ema_decay", "gp_k", "gp_p", "seed",
         "checkpoint_every", "cond_scale", "loss"}
    ),
    "diffusion": frozenset({"batch_size", "lr", "warmup_steps", "ema_decay", "seed", "checkpoint_every"}),
}  # fmt: skip


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
    return f"ib:trainrun:{run_id}"


class RunNotFound(Exception):
    """No training run with this id (never existed, or expired)."""


class TrainRunStore:
    """Reads and atomically updates :class:`TrainRun` records."""

    def __init__(self, client: redis.Redis, ttl_s: int) -> None:
        self.redis = client
        self.ttl_s = ttl_s

    def save(self, run: TrainRun) -> None:
        """Write the whole record."""
        self.redis.set(run_key(run.id), run.model_dump_json(), ex=self.ttl_s)

    def get(self, run_id: str) -> TrainRun:
        """The record of ``run_id``; raises :class:`RunNotFound`."""
        raw = self.redis.get(run_key(run_id)) if is_run_id(run_id) else None
        if raw is None:
            raise RunNotFound(run_id)
        return TrainRun.model_validate_json(raw)

    def update(self, run_id: str, change: Callable[[TrainRun], TrainRun | None]) -> TrainRun:
        """Apply ``change`` atomically (WATCH/MULTI, retried on conflict); returns the stored record."""
        if not is_run_id(run_id):
            raise RunNotFound(run_id)
        return update_record(
            self.redis, run_key(run_id), TrainRun, change, self.ttl_s, lambda: RunNotFound(run_id)
        )


def may_retrain(settings: Settings, user: str) -> bool:
    """Whether ``user`` (``platform:id``) may start a run: a listed admin, or the local CLI operator
    (who already holds the Redis URL and so the whole deployment)."""
    platform, _, user_id = user.partition(":")
    return platform == "cli" or settings.is_admin(platform, user_id)


class TrainingClient:
    """Front-end side of retraining. Cheap to create; holds a Redis client and a Celery producer."""

    def __init__(
        self, settings: Settings, client: redis.Redis | None = None, producer: Celery | None = None
    ) -> None:
        if not settings.redis_url:
            raise ValueError("settings.redis_url must be set")
        self.settings = settings
        self.redis = client or connect(settings.redis_url)
        self.producer = producer or make_producer(settings.redis_url)
        self.runs = TrainRunStore(self.redis, settings.result_ttl_s)

    def submit_retrain(
        self,
        request: RetrainRequest,
        user: str,
        conversation: Conversation,
        max_steps: int | None = None,
        *,
        force: bool = False,
        config: dict[str, Any] | None = None,
        count: int | None = None,
        eval_count: int | None = None,
    ) -> TrainRun:
        """Create the run record and queue its ``train`` task. Raises :class:`InputError` for a
        non-admin, an unknown dataset or out-of-range numbers. ``config``/``count``/``eval_count``
        (for operators and tests) shrink the model, the dataset and the evaluation."""
        if not may_retrain(self.settings, user):
            raise InputError("not_admin", "Only admins can retrain the model.")
        if request.model not in RETRAINABLE:
            raise InputError("unknown_model", f"model: must be one of {', '.join(RETRAINABLE)}.")
        if request.dataset not in self.settings.dataset_names:
            known = ", ".join(self.settings.dataset_names)
            raise InputError("unknown_dataset", f"Unknown dataset '{request.dataset[:30]}'. Known: {known}.")
        if not 1 <= request.epochs <= MAX_EPOCHS:
            raise InputError("epochs_out_of_range", f"epochs must be between 1 and {MAX_EPOCHS}.")
        if max_steps is not None and not 1 <= max_steps <= MAX_TRAIN_STEPS:
            raise InputError("steps_out_of_range", f"steps must be between 1 and {MAX_TRAIN_STEPS}.")
        unknown = sorted(set(config or {}) - CONFIG_KEYS[request.model])
        if unknown:
            raise InputError("bad_config", f"Unknown config keys: {', '.join(unknown)}.")
        run = TrainRun(
            dataset=request.dataset,
            epochs=request.epochs,
            max_steps=max_steps,
            count=count,
            eval_count=eval_count or 1000,
            force=force,
            from_scratch=request.from_scratch,
            model=request.model,
            config=dict(config or {}),
            requested_by=user,
            conversation=conversation,
        )
        # Record first, then the task: the worker never sees a task whose record is missing.
        self.runs.save(run)
        self.producer.send_task(TRAIN_TASK, args=[run.id], queue=QUEUE_TRAIN)
        return run

    def status(self, run_id: str) -> TrainRun:
        """The run record. Raises :class:`RunNotFound`."""
        return self.runs.get(run_id)

    def cancel(self, run_id: str) -> TrainRun:
        """Cancel a waiting or running run; a running one stops at its next progress report
        (its last checkpoint is kept, nothing is registered)."""

        def change(run: TrainRun) -> TrainRun:
            if run.status.finished:
                raise InputError("already_finished", f"That training run is already {run.status.value}.")
            run.status = TrainRunStatus.CANCELLED
            run.finished_at = time.time()
            return run

        return self.runs.update(run_id, change)

    def latest_unfinished(self, user: str) -> TrainRun | None:
        """The newest run ``user`` started that is not finished yet (None when there is none)."""
        found: list[TrainRun] = []
        for key in self.redis.scan_iter(match="ib:trainrun:*", count=500):
            run_id = key.decode().rsplit(":", 1)[-1]
            if key.decode() != run_key(run_id) or not is_run_id(run_id):
                continue  # the lock, re-check markers
            try:
                run = self.runs.get(run_id)
            except RunNotFound:
                continue
            if run.requested_by == user and not run.status.finished:
                found.append(run)
        return max(found, key=lambda r: r.created_at) if found else None

    def cancel_from_chat(self, run_id: str | None, user: str) -> TrainRun:
        """Cancel ``run_id`` (None: ``user``'s latest unfinished run) for an admin's chat command.
        Raises :class:`InputError` with a message for the chat: ``no_run`` (nothing to cancel),
        ``unknown_run`` or ``already_finished``."""
        if run_id is None:
            latest = self.latest_unfinished(user)
            if latest is None:
                raise InputError("no_run", "You have no training run waiting or running.")
            run_id = latest.id
        try:
            return self.cancel(run_id)
        except RunNotFound:
            raise InputError("unknown_run", f"No training run {run_id} (it may have expired).") from None

    def wait(self, run_id: str, timeout_s: float, poll_s: float = 0.5) -> TrainRun:
        """Block until the run is finished. Raises :class:`TimeoutError`."""
        deadline = time.monotonic() + timeout_s
        while True:
            run = self.runs.get(run_id)
            if run.status.finished:
                return run
            if time.monotonic() > deadline:
                raise TimeoutError(f"training run {run_id} still {run.status.value} after {timeout_s} s")
            time.sleep(poll_s)


def queued_text(run: TrainRun) -> str:
    """The chat answer to an accepted ``/retrain`` (same words on every platform)."""
    what = (
        f"{run.epochs} epoch{'s' if run.epochs != 1 else ''}"
        if run.max_steps is None
        else f"{run.max_steps} steps"
    )
    return (
        f"Queued training run {run.id}: {MODEL_TITLES[run.model]} on {run.dataset}, {what}. "
        "A train worker runs it; "
        "the new model is promoted only if it evaluates at least as well as the current one."
    )


def cancelled_text(run: TrainRun) -> str:
    """The chat answer to an accepted ``/retrain cancel`` (same words on every platform)."""
    return (
        f"Cancelled training run {run.id} ({MODEL_TITLES[run.model]} on {run.dataset}); "
        "a running one stops at its next "
        "progress report and registers nothing."
    )


def submit_retrain(
    settings: Settings,
    request: RetrainRequest,
    user: str,
    conversation: Conversation,
    max_steps: int | None = None,
    **options: Any,
) -> TrainRun:
    """Shorthand for :meth:`TrainingClient.submit_retrain` with a fresh client."""
    return TrainingClient(settings).submit_retrain(request, user, conversation, max_steps, **options)
