"""What a training run tells its admin's conversation: the start, progress notes with the loss
curve so far at 25/50/75 %, the end pictures (loss curve; DF-GAN's old-vs-new grid or the diffusion
model's samples), and a stop. Everything goes through the platform's outbox (:mod:`worker.outbox`)
and is best effort: a note that cannot be posted is logged, and training goes on.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from core.delivery import Notice
from core.model_versions import ModelRegistry
from core.train_runs import TrainRun
from worker.outbox import tell
from worker.runtime import Runtime
from worker.train_lease import Heartbeat
from worker.train_run import Trained, TrainOutcome, run_dir

log = logging.getLogger(__name__)

MILESTONES = (0.25, 0.5, 0.75)


def tell_admin(rt: Runtime, run: TrainRun, text: str) -> None:
    """Post ``text`` into the requesting conversation: web conversations get it in their history (the
    page shows it), Discord and Telegram a message through their sender (this worker then needs the
    platform's token); the CLI follows the run record."""
    log.info("train %s: %s", run.id, text)
    tell(rt, run.conversation, Notice(text, run_id=run.id))


def show(rt: Runtime, run: TrainRun, name: str, png: bytes, caption: str) -> None:
    """Store ``png`` as the run's picture ``name`` (the web serves it from there) and post it with
    ``caption`` (best effort, as :func:`tell_admin`)."""
    try:
        rt.images.put(run.id, name, png)
    except Exception as exc:  # pictures are best effort; the run record has the paths
        log.warning("train %s: could not store %s: %s", run.id, name, exc)
        return
    tell(rt, run.conversation, Notice(caption, run_id=run.id, picture=name, png=png))


def announce(rt: Runtime, run: TrainRun, parent: str | None, resumed_from: int | None) -> None:
    """The first note of a run (what it trains, from where), or the note of a resumed attempt."""
    title = "diffusion" if run.model == "diffusion" else "DF-GAN"
    if run.attempts == 1:
        how = f"fine-tuning {parent}" if parent else "from scratch"
        tell_admin(rt, run, f"Training run {run.id} started: {title} on {run.dataset}, {how}.")
    elif resumed_from:
        tell_admin(rt, run, f"Training run {run.id} resumed from its checkpoint at step {resumed_from}.")


def end_text(run: TrainRun, trained: Trained) -> str:
    """The note of a run that finished: its version, score and verdict, and where its pictures are."""
    score = f"score {run.metrics['all']:.3f}" if "all" in run.metrics else "no score"
    verdict = (
        "promoted: new images use it now"
        if run.promoted
        else f"kept the current model (an admin may still /model promote {run.version})"
    )
    return (
        f"Training run {run.id} finished: {run.version} ({score}), {verdict}. {run.gate_note} "
        f"Loss curve: {trained.loss_curve}; samples: {trained.sample_grid}."
    )


def post_pictures(rt: Runtime, registry: ModelRegistry, run: TrainRun, trained: Trained, device: str) -> None:
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
            pictures.append(old_vs_new(rt, registry, run, trained, device))
    except Exception:
        log.exception("train %s: could not draw the end-of-run pictures", run.id)
        return
    for name, png, caption in pictures:
        show(rt, run, name, png, caption)


def old_vs_new(
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


def stopped(rt: Runtime, run: TrainRun, heartbeat: Heartbeat, when: str) -> TrainOutcome | None:
    """The outcome when the run was taken over or cancelled (nothing gets registered), else None."""
    if heartbeat.lost:
        log.warning("training run %s was taken over by another worker; leaving it", run.id)
        return TrainOutcome("lost")
    if heartbeat.cancelled:
        tell_admin(rt, run, f"Training run {run.id} cancelled {when}; nothing was registered.")
        return TrainOutcome("cancelled")
    return None


def progress_reporter(
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
        heartbeat.beat(step=step, total=total, losses=short_losses(losses), eta_s=round(eta, 1))
        while state["milestone"] < len(MILESTONES) and step >= MILESTONES[state["milestone"]] * total:
            percent = round(MILESTONES[state["milestone"]] * 100)
            state["milestone"] += 1
            if step < total:
                text = (
                    f"Training run {run.id}: step {step}/{total}, {loss_text(losses)}, "
                    f"about {eta:.0f} s left."
                )
                # The loss curve so far, with the note as its caption (the note alone if none yet).
                curve = loss_curve_so_far(run_dir(rt, run.id))
                if curve is None:
                    tell_admin(rt, run, text)
                else:
                    show(rt, run, f"progress-{percent}", curve, text)
        return heartbeat.stop_requested

    return progress


def loss_curve_so_far(out: Path) -> bytes | None:
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


def short_losses(losses: dict[str, float]) -> dict[str, float]:
    """The losses a run record keeps, rounded."""
    return {k: round(float(v), 4) for k, v in losses.items() if k in ("loss_d", "loss_g", "gp", "loss")}


def loss_text(losses: dict[str, float]) -> str:
    """DF-GAN's "D … G …", or the diffusion model's single loss."""
    if "loss" in losses:
        return f"loss {losses['loss']:.4f}"
    return f"D {losses.get('loss_d', 0):.3f} G {losses.get('loss_g', 0):.3f}"
