"""The body of the ``train`` task: claim a run, train (resuming), evaluate, gate, register, promote.

Safety comes from three things, none of which trusts the broker to deliver exactly once:

- the run record's lease (as for jobs in :mod:`worker.generate`): a worker claims the run with a
  compare-and-set and renews ``lease_until`` from a heartbeat thread. A second copy of the task that
  arrives while the lease is live (a premature redelivery after the visibility timeout) schedules a
  re-check and leaves; a copy arriving after the owner died (no renewal) takes the run over;
- the training lock ``ib:trainrun:lock`` (value: the run id, expiry: the lease, renewed by the same
  heartbeat): one run at a time across all train workers; a dead worker's lock lapses;
- the run directory ``data_dir/runs/<run_id>/``: training always starts with ``resume=True``, so a
  taken-over run continues from its last checkpoint, and the new version's name is written to the record
  before it is registered, so a retried end registers that same version again, never a second one.

Run a train worker with a visibility timeout longer than any run, e.g.
``IMAGINEBOT_BROKER_VISIBILITY_TIMEOUT_S=86400 imaginebot worker --queues train``.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.ids import is_run_id
from core.model_versions import ModelRegistry
from core.training_client import LOCK_KEY, RunNotFound, TrainRun, TrainRunStatus, TrainRunStore
from worker.runtime import Runtime

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 5
LOCK_WAIT_RECHECK_S = 30.0
RECHECK_GRACE_S = 120.0  # a pending re-check's marker outlives its countdown by this much
#: Base configs per dataset, inside the installed package (a name lookup, never a user path).
BASE_CONFIGS = {"shapes": Path(__file__).resolve().parent.parent / "training/dfgan/configs/shapes-64.json"}
MILESTONES = (0.25, 0.5, 0.75)
#: A fine-tune's generator learning rate, as a fraction of its parent's: small steps away from
#: weights that already draw well. The discriminator starts fresh (checkpoints ship no D) at its rate.
FINETUNE_LR_SCALE = 0.25
#: Config keys that shape the network: a fine-tune keeps its parent's.
ARCHITECTURE_KEYS = (
    "imsize", "ngf", "ndf", "nz", "cond_dim", "text_encoder", "max_caption_tokens", "cond_scale"
)  # fmt: skip

# Take the lock when it is free or already ours (a previous attempt of this run); renew or release
# it only while it is ours.
_ACQUIRE = "local v = redis.call('GET', KEYS[1]) if v == false or v == ARGV[1] then " \
    "redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2]) return 1 end return 0"  # fmt: skip
_RENEW = "if redis.call('GET', KEYS[1]) == ARGV[1] then " \
    "return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end return 0"  # fmt: skip
_HANDOVER = "local v = redis.call('GET', KEYS[1]) if v == false or v == ARGV[1] then " \
    "redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3]) return 1 end return 0"  # fmt: skip
_RELEASE = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0"


@dataclass
class TrainOutcome:
    """What :func:`run_train` did, for the task wrapper."""

    state: str  # done | failed | cancelled | lost | skipped:<why>
    recheck_in: float | None = None  # someone holds the run or the lock: look again after this many s


def run_dir(rt: Runtime, run_id: str) -> Path:
    """``data_dir/runs/<run_id>`` (the id is checked: 16 hex digits)."""
    if not is_run_id(run_id):
        raise ValueError(f"bad run id {run_id[:40]!r}")
    return Path(rt.settings.data_dir) / "runs" / run_id


def run_train(rt: Runtime, run_id: str) -> TrainOutcome:
    """Claim run ``run_id`` and take it to its end (or hand back a re-check delay)."""
    store = TrainRunStore(rt.redis, rt.settings.result_ttl_s)
    try:
        model = store.get(run_id).model
    except RunNotFound:
        return TrainOutcome("skipped:missing")
    registry = ModelRegistry(rt.settings, rt.redis, family=model)
    wait = min(LOCK_WAIT_RECHECK_S, rt.settings.job_lease_s + 1.0)
    holder = rt.redis.get(LOCK_KEY)
    if holder is not None and holder.decode() != run_id:
        # Another run trains: leave this one queued and look again later (unless it is over).
        try:
            current = store.get(run_id)
        except RunNotFound:
            return TrainOutcome("skipped:missing")
        if current.status.finished:
            return TrainOutcome(f"skipped:{current.status.value}")
        if current.status == TrainRunStatus.QUEUED:
            _note_waiting(store, current, f"waiting for training run {holder.decode()} to finish")
        return TrainOutcome("skipped:locked", recheck_in=wait)
    run, why = claim(rt, store, registry, run_id)
    if run is None:
        if why == "held":
            held = store.get(run_id)
            wait = max(1.0, (held.lease_until or 0) - time.time() + 1.0)
            return TrainOutcome("skipped:held", recheck_in=wait)
        return TrainOutcome(f"skipped:{why}")
    lease_ms = int(rt.settings.job_lease_s * 1000)
    if not rt.redis.eval(_ACQUIRE, 1, LOCK_KEY, run_id, lease_ms):  # another run won the race
        holder = (rt.redis.get(LOCK_KEY) or b"?").decode()
        _requeue(store, rt.name, run_id, f"waiting for training run {holder} to finish")
        return TrainOutcome("skipped:locked", recheck_in=wait)
    heartbeat = Heartbeat(rt, store, run_id)
    heartbeat.start()
    try:
        return _train_and_register(rt, store, registry, run, heartbeat)
    except Exception as exc:  # a failed run fails its record, not the worker
        log.exception("training run %s failed", run_id)
        message = f"{type(exc).__name__}: {str(exc)[:300]}"
        failed = _finish(store, rt.name, run_id, TrainRunStatus.FAILED, error=message)
        if failed is not None:
            _tell(rt, failed, f"Training run {run_id} failed: {message}")
        return TrainOutcome("failed")
    finally:
        heartbeat.stop()
        if not heartbeat.lost:  # a worker that lost the run must not free the new owner's lock
            rt.redis.eval(_RELEASE, 1, LOCK_KEY, run_id)


def claim(
    rt: Runtime, store: TrainRunStore, registry: ModelRegistry, run_id: str
) -> tuple[TrainRun | None, str]:
    """Try to take ``run_id``. Returns (record, why): record is set only when we now hold it."""
    now = time.time()
    verdict = {"why": ""}
    try:
        current = store.get(run_id)  # cheap read first: duplicates of finished or held runs end here
    except RunNotFound:
        return None, "missing"
    if current.status.finished:
        return None, current.status.value
    if current.status == TrainRunStatus.RUNNING and (current.lease_until or 0) > now:
        return None, "held"
    promoted = registry.promoted()

    def change(run: TrainRun) -> TrainRun:
        if run.status.finished:
            verdict["why"] = run.status.value
            return run
        if run.status == TrainRunStatus.RUNNING and (run.lease_until or 0) > now:
            verdict["why"] = "held"
            return run
        if run.attempts >= MAX_ATTEMPTS:
            run.status = TrainRunStatus.FAILED
            run.error = f"Gave up after {MAX_ATTEMPTS} attempts: the training worker kept stopping."
            run.finished_at = now
            verdict["why"] = "gave_up"
            return run
        run.status = TrainRunStatus.RUNNING
        run.started_at = run.started_at or now
        run.worker = rt.name
        run.lease_until = now + rt.settings.job_lease_s
        run.attempts += 1
        run.note = ""
        if run.attempts == 1 and run.parent is None:
            run.parent = promoted  # lineage: what was promoted when this run began
        verdict["why"] = "claimed"
        return run

    try:
        run = store.update(run_id, change)
    except RunNotFound:
        return None, "missing"
    return (run if verdict["why"] == "claimed" else None), verdict["why"] or "?"


def _note_waiting(store: TrainRunStore, current: TrainRun, note: str) -> None:
    """Say in a queued run's record why it waits (written only when the note changes)."""
    if current.note == note:
        return

    def change(run: TrainRun) -> TrainRun:
        if run.status == TrainRunStatus.QUEUED:
            run.note = note
        return run

    store.update(current.id, change)


def _requeue(store: TrainRunStore, me: str, run_id: str, note: str) -> None:
    """Give a claimed run back (it waits for the lock); the attempt does not count."""

    def change(run: TrainRun) -> TrainRun:
        if run.status == TrainRunStatus.RUNNING and run.worker == me:
            run.status = TrainRunStatus.QUEUED
            run.lease_until = None
            run.attempts = max(0, run.attempts - 1)
            run.note = note
        return run

    store.update(run_id, change)


class Heartbeat:
    """Renews the run's lease and the training lock every lease/3 s from a thread; notices when the
    run was cancelled or taken over (then :attr:`stop_requested` is set and training stops)."""

    def __init__(self, rt: Runtime, store: TrainRunStore, run_id: str) -> None:
        self.rt, self.store, self.run_id = rt, store, run_id
        self.lost = False
        self.cancelled = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"lease-{run_id}", daemon=True)

    @property
    def stop_requested(self) -> bool:
        """True when training should stop now (cancelled, or another worker owns the run)."""
        return self.lost or self.cancelled

    def start(self) -> None:
        """Start renewing."""
        self._thread.start()

    def stop(self) -> None:
        """Stop renewing (the lease then lapses unless the record was finished)."""
        self._stop.set()
        self._thread.join(timeout=10)

    def beat(self, **fields: Any) -> TrainRun:
        """Renew now, writing ``fields`` into the record too; returns the stored record."""
        lease_s = self.rt.settings.job_lease_s
        me = self.rt.name

        def change(run: TrainRun) -> TrainRun:
            if run.status == TrainRunStatus.CANCELLED:
                self.cancelled = True
            elif run.worker != me:
                self.lost = True
            elif run.status != TrainRunStatus.RUNNING:
                pass  # we finished it a moment ago; still ours, so the lock is still ours to free
            else:
                run.lease_until = time.time() + lease_s
                run.updated_at = time.time()
                for name, value in fields.items():
                    setattr(run, name, value)
            return run

        run = self.store.update(self.run_id, change)
        if not self.stop_requested:
            self.rt.redis.eval(_RENEW, 1, LOCK_KEY, self.run_id, int(lease_s * 1000))
        return run

    def _loop(self) -> None:
        interval = max(0.2, self.rt.settings.job_lease_s / 3)
        while not self._stop.wait(interval):
            try:
                self.beat()
            except Exception:  # Redis hiccup: the next beat tries again, well within the lease
                log.exception("heartbeat of training run %s failed", self.run_id)


@dataclass
class Trained:
    """What a finished training part hands to the shared end of a run."""

    folder: Path  # what gets registered (a checkpoint or pipeline folder)
    step: int
    loss_curve: Path
    sample_grid: Path
    metrics: dict[str, float]
    baseline_version: str | None
    baseline: float | None
    prompts: list[str]


def _train_and_register(
    rt: Runtime, store: TrainRunStore, registry: ModelRegistry, run: TrainRun, heartbeat: Heartbeat
) -> TrainOutcome:
    """Train (DF-GAN or diffusion), evaluate, gate, register, promote, and tell the admin."""
    import torch

    from training.data import dataset_names
    from worker.engines.base import resolve_device

    settings = rt.settings
    if run.dataset not in dataset_names():
        raise ValueError(
            f"dataset '{run.dataset}' is not available on this training worker "
            f"(it has: {', '.join(dataset_names())})"
        )
    if settings.torch_threads > 0:
        torch.set_num_threads(settings.torch_threads)
    device = resolve_device(settings.device)
    part = _train_diffusion if run.model == "diffusion" else _train_dfgan
    trained = part(rt, registry, run, heartbeat, device)
    if isinstance(trained, TrainOutcome):
        return trained  # cancelled or taken over
    metrics = trained.metrics
    gate, note = _gate(run, metrics, trained.baseline_version, trained.baseline)

    # --- register (name written first: a retried end registers the same version) ---
    version = run.version or registry.new_version_name(run.dataset)
    heartbeat.beat(version=version)
    stopped = _stopped(rt, run, heartbeat, "after its evaluation")
    if stopped is not None:
        return stopped
    registry.register(
        version, trained.folder, run.dataset, metrics, parent=run.parent, run_id=run.id, note=note
    )
    promote = gate in ("passed", "forced")
    if promote:
        registry.promote(version)
    done = _finish(
        store,
        rt.name,
        run.id,
        TrainRunStatus.DONE,
        metrics=metrics,
        baseline=trained.baseline,
        baseline_version=trained.baseline_version,
        gate=gate,
        gate_note=note,
        version=version,
        promoted=promote,
        checkpoint=str(trained.folder),
        loss_curve=str(trained.loss_curve),
        sample_grid=str(trained.sample_grid),
        step=trained.step,
        eta_s=0.0,
    )
    if done is not None:
        score = f"score {metrics['all']:.3f}" if "all" in metrics else "no score"
        verdict = "promoted: new images use it now" if promote else "kept the current model"
        _tell(
            rt,
            done,
            f"Training run {run.id} finished: {version} ({score}), {verdict}. {note} "
            f"Loss curve: {trained.loss_curve}; samples: {trained.sample_grid}.",
        )
        _post_pictures(rt, registry, done, trained, device)
    return TrainOutcome("done")


def _announce(rt: Runtime, run: TrainRun, parent: str | None, resumed_from: int | None) -> None:
    """The first note of a run (what it trains, from where), or the note of a resumed attempt."""
    title = "diffusion" if run.model == "diffusion" else "DF-GAN"
    if run.attempts == 1:
        how = f"fine-tuning {parent}" if parent else "from scratch"
        _tell(rt, run, f"Training run {run.id} started: {title} on {run.dataset}, {how}.")
    elif resumed_from:
        _tell(rt, run, f"Training run {run.id} resumed from its checkpoint at step {resumed_from}.")


def _train_dfgan(
    rt: Runtime, registry: ModelRegistry, run: TrainRun, heartbeat: Heartbeat, device: str
) -> Trained | TrainOutcome:
    """Train DF-GAN for ``run`` and score the result and the baseline on the same captions."""
    from rich.console import Console

    from training.data import get_dataset
    from training.dfgan.trainer import train

    out = run_dir(rt, run.id)
    start_folder, start_config = _starting_point(rt, registry, run)
    config = _config_for(run, start_config)
    resumed_from = _checkpoint_step(out / "checkpoint")
    heartbeat.beat(resumed_from=resumed_from)
    parent = (start_config.get("version") or start_folder.name) if start_folder else None
    _announce(rt, run, parent, resumed_from)
    dataset = get_dataset(
        run.dataset, rt.settings.data_dir, imsize=config.imsize, count=run.count or 10_000, seed=config.seed
    )
    result = train(
        config,
        dataset,
        out,
        max_steps=run.max_steps,
        resume=True,
        device=device,
        progress=_progress_reporter(rt, run, heartbeat),
        console=Console(quiet=True),
        init_from=start_folder,  # used only when there is no checkpoint of this run to resume
    )
    # A beat now also catches a cancel that came after the last progress report.
    heartbeat.beat(step=result.step, total=result.step, eta_s=0.0, losses=_short(result.last_losses))
    stopped = _stopped(rt, run, heartbeat, f"at step {result.step}")
    if stopped is not None:
        return stopped
    metrics: dict[str, float] = {}
    if run.dataset == "shapes":
        from training.dfgan.checkpoint import load_generator
        from training.dfgan.evaluate import evaluate_shapes

        metrics = evaluate_shapes(load_generator(result.checkpoint, device), count=run.eval_count)
    baseline_version, baseline = _baseline(rt, registry, run, device)
    prompts = list(config.sample_prompts or getattr(dataset, "sample_prompts", None) or [run.dataset])
    return Trained(
        Path(result.checkpoint), result.step, Path(result.loss_curve), Path(result.sample_grid),
        metrics, baseline_version, baseline, prompts,
    )  # fmt: skip


def _train_diffusion(
    rt: Runtime, registry: ModelRegistry, run: TrainRun, heartbeat: Heartbeat, device: str
) -> Trained | TrainOutcome:
    """Train our diffusion model for ``run`` (see :mod:`worker.train_diffusion`) and score the result
    and the baseline on the same captions."""
    from worker import train_diffusion as diffusion

    settings = rt.settings
    out = run_dir(rt, run.id)
    start = diffusion.starting_point(settings, registry, run)
    resumed_from = _checkpoint_step(out / "state")
    heartbeat.beat(resumed_from=resumed_from)
    _announce(rt, run, diffusion.version_of(start) if start else None, resumed_from)
    result, _, prompts = diffusion.train_run(
        settings, run, out, start, _progress_reporter(rt, run, heartbeat), device
    )
    heartbeat.beat(
        step=result.step, total=result.step, eta_s=0.0, losses={"loss": round(result.last_loss, 4)}
    )
    stopped = _stopped(rt, run, heartbeat, f"at step {result.step}")
    if stopped is not None:
        return stopped
    folder = diffusion.export_for_registry(result, out)
    metrics = diffusion.evaluate(settings, folder, run.dataset, run.eval_count, device)
    promoted = registry.promoted_entry()
    if promoted is not None:
        baseline_version, baseline = promoted.version, promoted.metrics.get("all")
    else:
        default = diffusion.default_folder(settings)
        scores = diffusion.evaluate(settings, default, run.dataset, run.eval_count, device) if default else {}
        baseline_version = diffusion.version_of(default) if default else None
        baseline = scores.get("all")
    return Trained(
        folder, result.step, Path(result.loss_curve), Path(result.sample_grid),
        metrics, baseline_version, baseline, prompts,
    )  # fmt: skip


#: The pictures a run posts: the loss curve so far at 25/50/75 %, and at the end the loss curve and the
#: old-vs-new grid (also the only names ``GET /api/runs/<id>/<name>.png`` serves).
RUN_PICTURES = ("progress-25", "progress-50", "progress-75", "loss-curve", "old-vs-new", "samples")


def _post_pictures(
    rt: Runtime, registry: ModelRegistry, run: TrainRun, trained: Trained, device: str
) -> None:
    """Store the run's end pictures under its id and post them to the admin's conversation: the loss
    curve and, for DF-GAN, an old-vs-new grid (same prompts and seeds; old: the version promoted when
    the run began, else the default checkpoint), for diffusion the new model's sample grid. Best
    effort: a failure is logged, the run's result stands."""
    try:
        pictures = [
            (
                "loss-curve",
                trained.loss_curve.read_bytes(),
                f"Training run {run.id}: loss curve ({run.step} steps).",
            )
        ]
        if run.model == "diffusion":
            pictures.append(
                (
                    "samples",
                    trained.sample_grid.read_bytes(),
                    f"Training run {run.id}: samples of {run.version}.",
                )
            )
        else:
            pictures.append(_old_vs_new(rt, registry, run, trained, device))
    except Exception:
        log.exception("train %s: could not draw the end-of-run pictures", run.id)
        return
    for name, png, caption in pictures:
        _show(rt, run, name, png, caption)


def _old_vs_new(
    rt: Runtime, registry: ModelRegistry, run: TrainRun, trained: Trained, device: str
) -> tuple[str, bytes, str]:
    """DF-GAN's old-vs-new grid: the same prompts and seeds through the old and the new generator."""
    from training.dfgan.checkpoint import load_generator
    from training.dfgan.compare import compare_grid, png_bytes
    from worker.engines.dfgan import resolve_default_checkpoint

    parent = registry.get(run.parent) if run.parent else None
    old_folder = (
        registry.materialize(parent.version)[0]
        if parent is not None
        else resolve_default_checkpoint(rt.settings.dfgan_checkpoint)
    )
    old = load_generator(old_folder, device)
    new = load_generator(trained.folder, device)
    new.version = run.version or new.version
    grid = png_bytes(compare_grid(old, new, trained.prompts))
    return (
        "old-vs-new",
        grid,
        f"Training run {run.id}: {old.version} (old) vs {new.version} (new), same seeds.",
    )


def _show(rt: Runtime, run: TrainRun, name: str, png: bytes, caption: str) -> None:
    """Store ``png`` as the run's picture ``name`` and post it with ``caption`` (best effort, as
    :func:`_tell`)."""
    conversation = run.conversation
    try:
        rt.images.put(run.id, name, png)
        if conversation.platform == "web":
            event = {
                "role": "bot",
                "text": caption,
                "run_id": run.id,
                "image_url": f"/api/runs/{run.id}/{name}.png",
            }
            rt.history.append("web", conversation.chat_id, event)
        elif conversation.platform in TEXT_SENDERS:
            import importlib

            sender = importlib.import_module(TEXT_SENDERS[conversation.platform])
            sender.send_photo_text(conversation, png, caption, rt.settings)
    except Exception as exc:  # pictures are best effort; the run record has the paths
        log.warning("train %s: could not post %s to %s: %s", run.id, name, conversation.platform, exc)


def _stopped(rt: Runtime, run: TrainRun, heartbeat: Heartbeat, when: str) -> TrainOutcome | None:
    """The outcome when the run was taken over or cancelled (nothing gets registered), else None."""
    if heartbeat.lost:
        log.warning("training run %s was taken over by another worker; leaving it", run.id)
        return TrainOutcome("lost")
    if heartbeat.cancelled:
        _tell(rt, run, f"Training run {run.id} cancelled {when}; nothing was registered.")
        return TrainOutcome("cancelled")
    return None


def _baseline(
    rt: Runtime, registry: ModelRegistry, run: TrainRun, device: str
) -> tuple[str | None, float | None]:
    """(version, score) the new version must match: the promoted version's stored score; with
    nothing promoted, the default checkpoint the workers use (configured or shipped), evaluated now
    on the same captions; (None, None) when that is the random-init placeholder or no metric applies."""
    promoted = registry.promoted_entry()
    if promoted is not None:
        return promoted.version, promoted.metrics.get("all")
    if run.dataset != "shapes":
        return None, None
    from training.dfgan.checkpoint import load_generator
    from training.dfgan.evaluate import evaluate_shapes
    from worker.engines.dfgan import resolve_default_checkpoint

    folder = resolve_default_checkpoint(rt.settings.dfgan_checkpoint)
    if folder is None:
        return None, None
    loaded = load_generator(folder, device)
    return loaded.version, evaluate_shapes(loaded, count=run.eval_count)["all"]


def _gate(
    run: TrainRun, metrics: dict[str, float], baseline_version: str | None, baseline: float | None
) -> tuple[str, str]:
    """(gate, note): promote only a version at least as good as the promoted one (or when forced)."""
    if "all" not in metrics:
        if run.force:
            return "forced", f"No automatic evaluation for dataset '{run.dataset}'; promoted because forced."
        return "skipped", (
            f"No automatic evaluation for dataset '{run.dataset}', so it was registered but not promoted; "
            "promote it by hand with `imaginebot models promote VERSION`."
        )
    score = metrics["all"]
    if baseline is None:
        return "passed", (
            "No promoted version or default checkpoint with a score to beat."
            if baseline_version is None
            else f"{baseline_version} has no stored score to beat."
        )
    if score >= baseline:
        return "passed", f"Score {score:.3f} >= {baseline:.3f} of {baseline_version}."
    if run.force:
        return "forced", f"Score {score:.3f} < {baseline:.3f} of {baseline_version}; promoted because forced."
    return "failed", f"Score {score:.3f} < {baseline:.3f} of {baseline_version}; not promoted."


def _progress_reporter(
    rt: Runtime, run: TrainRun, heartbeat: Heartbeat
) -> Callable[[int, int, dict[str, float]], bool]:
    """The trainer's progress callback: a record write at most every ``progress_interval_s``
    (step/total, losses, time left; renews the lease), milestones to the conversation, and stop
    when the run was cancelled or taken over."""
    interval = rt.settings.progress_interval_s
    started = time.monotonic()
    state: dict[str, Any] = {"last": 0.0, "first_step": None, "milestone": 0}

    def progress(step: int, total: int, losses: dict[str, float]) -> bool:
        now = time.monotonic()
        if state["first_step"] is None:
            state["first_step"] = step - 1
        # A milestone is never skipped for the interval: each is told at the step that reaches it.
        due = state["milestone"] < len(MILESTONES) and step >= MILESTONES[state["milestone"]] * total
        if now - state["last"] < interval and step < total and not due:
            return heartbeat.stop_requested
        state["last"] = now
        done_here = step - state["first_step"]
        eta = (now - started) / max(done_here, 1) * (total - step)
        heartbeat.beat(step=step, total=total, losses=_short(losses), eta_s=round(eta, 1))
        while state["milestone"] < len(MILESTONES) and step >= MILESTONES[state["milestone"]] * total:
            percent = round(MILESTONES[state["milestone"]] * 100)
            state["milestone"] += 1
            if step < total:
                text = (
                    f"Training run {run.id}: step {step}/{total}, {_loss_text(losses)}, "
                    f"about {eta:.0f} s left."
                )
                # The loss curve so far, with the note as its caption (the note alone if none yet).
                curve = _loss_curve_so_far(run_dir(rt, run.id))
                if curve is None:
                    _tell(rt, run, text)
                else:
                    _show(rt, run, f"progress-{percent}", curve, text)
        return heartbeat.stop_requested

    return progress


def _loss_curve_so_far(out: Path) -> bytes | None:
    """A PNG of the losses the trainer has logged in ``out/losses.jsonl`` so far (None when there are
    none yet or they cannot be drawn: the progress note then goes out as text)."""
    from training.loss_log import plot_curves

    path = out / "losses.jsonl"
    try:
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        if len(rows) < 2:
            return None
        picture = out / "loss_curve_progress.png"
        keys = [k for k in rows[-1] if k != "step"]
        plot_curves(rows, keys, picture, title="so far")
        return picture.read_bytes()
    except (OSError, ValueError):
        log.warning("could not draw the loss curve so far from %s", path, exc_info=True)
        return None


def _starting_point(
    rt: Runtime, registry: ModelRegistry, run: TrainRun
) -> tuple[Path | None, dict[str, Any]]:
    """(checkpoint folder a run fine-tunes, that folder's config): the version promoted when the run
    began, else the default checkpoint the workers use. (None, {}) for a from-scratch run, or when
    the default is the random-init placeholder (nothing worth fine-tuning)."""
    from worker.engines.dfgan import resolve_default_checkpoint

    if run.from_scratch:
        return None, {}
    entry = registry.get(run.parent) if run.parent else None
    default = resolve_default_checkpoint(rt.settings.dfgan_checkpoint)
    # The parent may have been trained on another machine: fetched from Redis and verified if so.
    folder = registry.materialize(entry.version)[0] if entry is not None else default
    if folder is None:
        return None, {}
    folder = Path(folder)
    return folder, json.loads((folder / "config.json").read_text())


def _config_for(run: TrainRun, parent: dict[str, Any] | None = None) -> Any:
    """The run's config: the dataset's base config, or for a fine-tune its ``parent``'s (architecture
    and optimiser), then the run's overrides and epochs. A fine-tune lowers the generator's learning
    rate (unless the run sets it) and starts its EMA at the parent's weights without a warm-up."""
    from training.dfgan.config import DFGANConfig

    base = BASE_CONFIGS.get(run.dataset)
    data = json.loads(base.read_text()) if base is not None and base.is_file() else {}
    if parent:
        changed = [k for k in ARCHITECTURE_KEYS if k in run.config and run.config[k] != parent.get(k)]
        if changed:
            raise ValueError(
                f"the run's config changes {', '.join(changed)} of the model it fine-tunes "
                f"({parent.get('version') or 'the default'}); "
                "retrain with from:scratch for a new architecture"
            )
        data.update({k: v for k, v in parent.items() if k not in ("training", "version", "epochs")})
        if "lr_g" not in run.config:
            data["lr_g"] = float(data.get("lr_g", 1e-4)) * FINETUNE_LR_SCALE
        data["ema_warmup"] = False
    data.update(run.config)
    data["epochs"] = run.epochs
    data["version"] = ""  # the registry names the version
    return DFGANConfig.from_dict(data)


def _checkpoint_step(state_dir: Path) -> int | None:
    """The step of the resumable training state in ``state_dir`` (None when there is none)."""
    meta = state_dir / "training_state.json"
    if not meta.is_file():
        return None
    try:
        return int(json.loads(meta.read_text())["meta"]["step"])
    except (ValueError, KeyError):
        return None


def _short(losses: dict[str, float]) -> dict[str, float]:
    return {k: round(float(v), 4) for k, v in losses.items() if k in ("loss_d", "loss_g", "gp", "loss")}


def _loss_text(losses: dict[str, float]) -> str:
    """DF-GAN's "D … G …", or the diffusion model's single loss."""
    if "loss" in losses:
        return f"loss {losses['loss']:.4f}"
    return f"D {losses.get('loss_d', 0):.3f} G {losses.get('loss_g', 0):.3f}"


def _finish(
    store: TrainRunStore, me: str, run_id: str, status: TrainRunStatus, **fields: Any
) -> TrainRun | None:
    """End the run if we still own it; returns the record, or None when it was not ours any more."""
    owned = {"ok": False}

    def change(run: TrainRun) -> TrainRun:
        if run.status != TrainRunStatus.RUNNING or run.worker != me:
            return run  # cancelled or taken over meanwhile: theirs to finish
        owned["ok"] = True
        run.status = status
        run.finished_at = time.time()
        run.lease_until = None
        for name, value in fields.items():
            setattr(run, name, value)
        return run

    run = store.update(run_id, change)
    return run if owned["ok"] else None


#: platform -> module whose ``send_text(conversation, text, settings)`` posts a chat message.
TEXT_SENDERS = {"discord": "bots.discord.send", "telegram": "bots.telegram.send"}


def _tell(rt: Runtime, run: TrainRun, text: str) -> None:
    """Post ``text`` into the requesting conversation: web conversations get it in their history (the
    page shows it), Discord and Telegram a message through their sender (this worker then needs the
    platform's token); the CLI follows the run record. A message that cannot be sent is logged, and
    training goes on."""
    conversation = run.conversation
    log.info("train %s: %s", run.id, text)
    if conversation.platform == "web":
        rt.history.append("web", conversation.chat_id, {"role": "bot", "text": text, "run_id": run.id})
    elif conversation.platform in TEXT_SENDERS:
        import importlib

        try:
            sender = importlib.import_module(TEXT_SENDERS[conversation.platform])
            sender.send_text(conversation, text, rt.settings)
        except Exception as exc:  # progress notes are best effort; the run record has it all
            log.warning("train %s: could not post to %s: %s", run.id, conversation.platform, exc)


def schedule_recheck(
    rt: Runtime, app: Any, run_id: str, delay_s: float, token: str | None = None
) -> str | None:
    """Send the ``train`` task for ``run_id`` again after ``delay_s``; returns the new re-check's
    token, or None when another re-check is pending.

    Only one chain of re-checks exists per run: the pending one's token sits in
    ``ib:trainrun:<id>:recheck``, and only the task carrying that token (or any task once the key
    lapsed) may schedule the next. Copies of a message that the broker delivered twice then cannot
    multiply the re-checks, and the chain cannot die of its own marker.
    """
    from core.task_contract import QUEUE_TRAIN, TRAIN_TASK

    new = uuid.uuid4().hex
    ttl_ms = int((delay_s + RECHECK_GRACE_S) * 1000)
    if not rt.redis.eval(_HANDOVER, 1, f"ib:trainrun:{run_id}:recheck", token or "", new, ttl_ms):
        return None
    app.send_task(TRAIN_TASK, args=[run_id, new], queue=QUEUE_TRAIN, countdown=delay_s)
    return new
