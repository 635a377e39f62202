"""Retraining runs from the front-ends' side: submit, status and cancel. The chat answers about
runs are :mod:`core.conversation.replies`.

The run record and its store are :mod:`core.train_runs`. Only admins may start a run; dataset names
come from ``settings.dataset_names`` and are never used as paths. Nothing here imports torch or the
worker.
"""

from __future__ import annotations

import time
from typing import Any

import redis
from celery import Celery

from core.commands import NOT_ADMIN_RETRAIN, RetrainRequest, check_retrain, require_admin
from core.errors import InputError
from core.ids import is_run_id
from core.jobs import Conversation
from core.settings import Settings
from core.store import connect
from core.task_contract import QUEUE_TRAIN, TRAIN_TASK, make_producer
from core.train_runs import RunNotFound, TrainRun, TrainRunStatus, TrainRunStore, run_key

MAX_TRAIN_STEPS = 1_000_000
#: Config overrides an operator may give a run, per model (DFGANConfig / DiffusionConfig fields).
CONFIG_KEYS = {
    "dfgan": frozenset(
        {"imsize", "ngf", "ndf", "batch_size", "lr_g", "lr_d", "ema_decay", "gp_k", "gp_p", "seed",
         "checkpoint_every", "cond_scale", "loss"}
    ),
    "diffusion": frozenset({"batch_size", "lr", "warmup_steps", "ema_decay", "seed", "checkpoint_every"}),
}  # fmt: skip


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
        require_admin(self.settings, user, NOT_ADMIN_RETRAIN)
        request = check_retrain(request, self.settings)
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
            eval_count=eval_count or self.settings.retrain_eval_count,
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
