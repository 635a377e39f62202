"""The body of the ``train`` task: claim a run, train (resuming), evaluate, gate, register, promote.

Safety comes from three things, none of which trusts the broker to deliver exactly once:

- the run record's lease (:mod:`core.leases`, as for jobs): a worker claims the run with a
  compare-and-set and renews ``lease_until`` from a heartbeat thread (:mod:`worker.train_lease`).
  A second copy of the task that arrives while the lease is live (a premature redelivery after the
  visibility timeout) schedules a re-check and leaves; a copy arriving after the owner died (no
  renewal) takes the run over;
- the training lock ``ib:trainrun:lock`` (value: the run id, expiry: the lease, renewed by the same
  heartbeat): one run at a time across all train workers; a dead worker's lock lapses;
- the run directory ``data_dir/runs/<run_id>/``: training always starts with ``resume=True``, so a
  taken-over run continues from its last checkpoint, and the new version's name is written to the record
  before it is registered, so a retried end registers that same version again, never a second one.

The training itself is :mod:`worker.train_dfgan` or :mod:`worker.train_diffusion`; the gate
:mod:`worker.train_gate`; what the admin is told :mod:`worker.train_report`.

Run a train worker with a visibility timeout longer than any run, e.g.
``IMAGINEBOT_BROKER_VISIBILITY_TIMEOUT_S=86400 imaginebot worker --queues train``.
"""

from __future__ import annotations

import logging
from typing import Any

from core.leases import Claim, KeyLease, Verdict
from core.model_versions import ModelRegistry
from core.train_runs import RunNotFound, TrainRun, TrainRunStatus, TrainRunStore
from worker import train_dfgan, train_diffusion
from worker.runtime import Runtime
from worker.train_gate import gate
from worker.train_lease import Heartbeat, training_lock
from worker.train_report import end_text, post_pictures, stopped, tell_admin
from worker.train_run import Trained, TrainOutcome

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 5
LOCK_WAIT_RECHECK_S = 30.0


def run_train(rt: Runtime, run_id: str) -> TrainOutcome:
    """Claim run ``run_id`` and take it to its end (or hand back a re-check delay)."""
    store = TrainRunStore(rt.redis, rt.settings.result_ttl_s)
    try:
        model = store.get(run_id).model
    except RunNotFound:
        return TrainOutcome("skipped:missing")
    registry = ModelRegistry(rt.settings, rt.redis, family=model)
    lock = training_lock(rt, run_id)
    wait = min(LOCK_WAIT_RECHECK_S, rt.settings.job_lease_s + 1.0)
    waiting = _wait_for_other_run(store, lock, run_id, wait)
    if waiting is not None:
        return waiting
    taken = claim(rt, store, registry, run_id)
    if taken.held is None:
        return _not_claimed(taken)
    if not lock.acquire():  # another run won the race: give this one back, look again later
        holder = lock.holder() or "?"
        store.give_back(run_id, rt.name, note=f"waiting for training run {holder} to finish")
        return TrainOutcome("skipped:locked", recheck_in=wait)
    heartbeat = Heartbeat(rt, store, run_id)
    heartbeat.start()
    try:
        return _train_and_register(rt, store, registry, taken.held, heartbeat)
    except Exception as exc:  # a failed run fails its record, not the worker
        log.exception("training run %s failed", run_id)
        message = f"{type(exc).__name__}: {str(exc)[:300]}"
        failed = store.finish(run_id, TrainRunStatus.FAILED, owner=rt.name, error=message)
        if failed is not None:
            tell_admin(rt, failed, f"Training run {run_id} failed: {message}")
        return TrainOutcome("failed")
    finally:
        heartbeat.stop()
        if not heartbeat.lost:  # a worker that lost the run must not free the new owner's lock
            lock.release()


def claim(rt: Runtime, store: TrainRunStore, registry: ModelRegistry, run_id: str) -> Claim[TrainRun]:
    """Try to take ``run_id`` (:meth:`core.leases.LeasedStore.claim`). A first attempt records its
    lineage: the version promoted when the run began."""
    promoted = registry.promoted()

    def starting(run: TrainRun) -> None:
        run.note = ""
        if run.attempts == 1 and run.parent is None:
            run.parent = promoted

    return store.claim(run_id, rt.name, rt.settings.job_lease_s, MAX_ATTEMPTS, on_claim=starting)


def _not_claimed(taken: Claim[TrainRun]) -> TrainOutcome:
    """The outcome of a claim that did not take the run (a re-check when another worker holds it)."""
    if taken.verdict == Verdict.HELD_BY_OTHER:
        return TrainOutcome("skipped:held", recheck_in=taken.recheck_in())
    if taken.verdict == Verdict.ALREADY_DONE and taken.record is not None:
        return TrainOutcome(f"skipped:{taken.record.status.value}")
    return TrainOutcome(f"skipped:{taken.verdict.value}")


def _wait_for_other_run(
    store: TrainRunStore, lock: KeyLease, run_id: str, wait: float
) -> TrainOutcome | None:
    """While another run holds the training lock, leave this one queued (saying why in its record)
    and look again in ``wait`` s, unless it is over. None when the lock is free or this run's."""
    holder = lock.holder()
    if holder is None or holder == run_id:
        return None
    try:
        current = store.get(run_id)
    except RunNotFound:
        return TrainOutcome("skipped:missing")
    if current.status.finished:
        return TrainOutcome(f"skipped:{current.status.value}")
    note = f"waiting for training run {holder} to finish"
    if current.status == TrainRunStatus.QUEUED and current.note != note:

        def change(run: TrainRun) -> TrainRun:
            if run.status == TrainRunStatus.QUEUED:
                run.note = note
            return run

        store.update(run_id, change)
    return TrainOutcome("skipped:locked", recheck_in=wait)


def _train_and_register(
    rt: Runtime, store: TrainRunStore, registry: ModelRegistry, run: TrainRun, heartbeat: Heartbeat
) -> TrainOutcome:
    """Train (DF-GAN or diffusion), evaluate, gate, register, promote, and tell the admin."""
    device = _prepare(rt, run)
    part = train_diffusion.train_part if run.model == "diffusion" else train_dfgan.train_part
    trained = part(rt, registry, run, heartbeat, device)
    if isinstance(trained, TrainOutcome):
        return trained  # cancelled or taken over
    verdict, note = gate(run, trained.metrics, trained.baseline_version, trained.baseline)
    # The name is written first: a retried end registers the same version, never a second one.
    version = run.version or registry.new_version_name(run.dataset)
    heartbeat.beat(version=version)
    halted = stopped(rt, run, heartbeat, "after its evaluation")
    if halted is not None:
        return halted
    registry.register(
        version, trained.folder, run.dataset, trained.metrics, parent=run.parent, run_id=run.id, note=note
    )
    promote = verdict in ("passed", "forced")
    if promote:
        registry.promote(version)
    result = _result_fields(trained, verdict, note, version, promote)
    done = store.finish(run.id, TrainRunStatus.DONE, owner=rt.name, **result)
    if done is not None:
        tell_admin(rt, done, end_text(done, trained))
        post_pictures(rt, registry, done, trained, device)
    return TrainOutcome("done")


def _prepare(rt: Runtime, run: TrainRun) -> str:
    """Check the run's dataset is here, set torch's threads; returns the device to train on."""
    import torch

    from training.data import dataset_names
    from training.data.community import available
    from training.device import resolve_device

    if not available(run.dataset, rt.settings.data_dir):
        raise ValueError(
            f"dataset '{run.dataset}' is not available on this training worker "
            f"(it has: {', '.join(dataset_names())}, and the community datasets in its data dir)"
        )
    if rt.settings.torch_threads > 0:
        torch.set_num_threads(rt.settings.torch_threads)
    return resolve_device(rt.settings.device)


def _result_fields(trained: Trained, verdict: str, note: str, version: str, promote: bool) -> dict[str, Any]:
    """What a finished run's record holds about its result."""
    return {
        "metrics": trained.metrics,
        "baseline": trained.baseline,
        "baseline_version": trained.baseline_version,
        "gate": verdict,
        "gate_note": note,
        "version": version,
        "promoted": promote,
        "checkpoint": str(trained.folder),
        "loss_curve": str(trained.loss_curve),
        "sample_grid": str(trained.sample_grid),
        "step": trained.step,
        "eta_s": 0.0,
    }
