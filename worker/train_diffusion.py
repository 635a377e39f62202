"""What a ``train`` task does differently for our diffusion model: where a run starts, how it trains,
what version folder it registers, and how that folder is scored. The run's life around it (claim,
lease, lock, gate, registry, promotion, chat) is :mod:`worker.train_task`'s, shared with DF-GAN
(:mod:`worker.train_dfgan`).

A run fine-tunes the model the workers draw with by default (the promoted diffusion version, else the
configured or shipped model) at a quarter of the learning rate with a short warm-up; ``from_scratch``
starts from random weights with the base config. Every run is scored on an answer key: its dataset's
(``shapes``, ``scenes``) or, for a community dataset, the shapes key (:mod:`worker.train_gate`).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import fields
from pathlib import Path
from typing import Any

from core.model_versions import ModelRegistry
from core.settings import Settings
from core.train_runs import FINETUNE_LR_SCALE, TrainRun
from worker.runtime import Runtime
from worker.train_gate import SCORED_DATASETS, answer_key, baseline_of
from worker.train_lease import Heartbeat
from worker.train_report import announce, progress_reporter, stopped
from worker.train_run import Trained, TrainOutcome, checkpoint_step, run_dir

#: A fine-tune's warm-up (steps); its learning rate is the base config's times FINETUNE_LR_SCALE.
FINETUNE_WARMUP_STEPS = 20
#: Sampling settings of the evaluation: the shipped model's defaults.
EVAL_STEPS, EVAL_GUIDANCE = 20, 2.0


def train_part(
    rt: Runtime, registry: ModelRegistry, run: TrainRun, heartbeat: Heartbeat, device: str
) -> Trained | TrainOutcome:
    """Train our diffusion model for ``run`` and score the result and the baseline on the same
    captions."""
    settings = rt.settings
    out = run_dir(rt, run.id)
    start = starting_point(settings, registry, run)
    resumed_from = checkpoint_step(out / "state")
    heartbeat.beat(resumed_from=resumed_from)
    announce(rt, run, version_of(start) if start else None, resumed_from)
    result, _, prompts = train_run(settings, run, out, start, progress_reporter(rt, run, heartbeat), device)
    heartbeat.beat(
        step=result.step, total=result.step, eta_s=0.0, losses={"loss": round(result.last_loss, 4)}
    )
    halted = stopped(rt, run, heartbeat, f"at step {result.step}")
    if halted is not None:
        return halted
    folder = export_for_registry(result, out)
    key = answer_key("diffusion", run.dataset)  # a community dataset: the shapes answer key
    metrics = evaluate(settings, folder, key, run.eval_count, device)
    baseline_version, baseline = score_baseline(settings, registry, run, device)
    return Trained(
        folder, result.step, Path(result.loss_curve), Path(result.sample_grid),
        metrics, baseline_version, baseline, prompts,
    )  # fmt: skip


def score_baseline(
    settings: Settings, registry: ModelRegistry, run: TrainRun, device: str
) -> tuple[str | None, float | None]:
    """(version, score) the new version must match on the run's answer key: the promoted version's
    stored score (a run on an answer-key dataset), or that version scored now on the same captions
    (a run on a community dataset); with nothing promoted, the default pipeline scored now."""
    baseline = baseline_of(registry, run, default_folder(settings))
    if baseline.folder is None:
        return baseline.version, baseline.score
    scores = evaluate(settings, baseline.folder, answer_key("diffusion", run.dataset), run.eval_count, device)
    return baseline.version or version_of(baseline.folder), scores.get("all")


def default_folder(settings: Settings) -> Path | None:
    """The pipeline folder the workers use when nothing is promoted: the configured local folder, or
    the shipped model (None when the configured model is a hub id: nothing to fine-tune here)."""
    from worker.engines.diffusion import SHIPPED_PIPELINE

    if settings.diffusion_model:
        folder = Path(settings.diffusion_model)
        return folder if (folder / "model_index.json").is_file() else None
    return SHIPPED_PIPELINE if (SHIPPED_PIPELINE / "model_index.json").is_file() else None


def starting_point(settings: Settings, registry: ModelRegistry, run: TrainRun) -> Path | None:
    """The pipeline folder ``run`` fine-tunes (fetched from Redis and verified when another machine
    trained it), or None for a from-scratch run."""
    if run.from_scratch:
        return None
    entry = registry.get(run.parent) if run.parent else None
    return registry.materialize(entry.version)[0] if entry is not None else default_folder(settings)


def config_for(run: TrainRun, start: Path | None) -> Any:
    """The base :class:`~training.diffusion.config.DiffusionConfig` with the run's overrides (those it
    knows), its step budget and, for a fine-tune of the pipeline in ``start``, that pipeline's text
    condition, the lower learning rate and the short warm-up."""
    from training.diffusion.config import DiffusionConfig

    config = DiffusionConfig()
    fine_tune = start is not None
    if fine_tune:
        # The parent's text condition (e.g. minilm-slots, 439 numbers), so its UNet's weights fit.
        index = json.loads((start / "model_index.json").read_text())
        unet = json.loads((start / "unet" / "config.json").read_text())
        config.text_encoder = index.get("text_encoder_name", config.text_encoder)
        config.cond_dim = int(unet.get("cross_attention_dim", config.cond_dim))
    known = {f.name for f in fields(DiffusionConfig)}
    for name, value in run.config.items():
        if name in known:
            setattr(config, name, value)
    if fine_tune:
        if "lr" not in run.config:
            config.lr *= FINETUNE_LR_SCALE
        config.warmup_steps = min(config.warmup_steps, FINETUNE_WARMUP_STEPS)
    config.version = ""  # the registry names the version
    return config


def train_run(
    settings: Settings,
    run: TrainRun,
    out: Path,
    start: Path | None,
    progress: Callable[[int, int, dict[str, float]], bool],
    device: str,
) -> tuple[Any, Any, list[str]]:
    """Train (resuming from ``out`` when it has a state); returns (the trainer's result, the config,
    the dataset's sample prompts)."""
    from rich.console import Console

    from training.data.community import training_dataset
    from training.diffusion.trainer import train

    config = config_for(run, start)
    data = training_dataset(
        run.dataset, settings.data_dir, imsize=config.source_size, count=run.count or 10_000, seed=config.seed
    )
    total = run.max_steps or max(1, run.epochs * len(data) // config.batch_size)
    result = train(
        config,
        data,
        out,
        max_steps=total,
        resume=True,
        device=device,
        progress=lambda step, steps, loss: progress(step, steps, {"loss": loss}),
        console=Console(quiet=True),
        init_from=start,  # used only when there is no state of this run to resume
    )
    prompts = list(config.sample_prompts or getattr(data, "sample_prompts", None) or [run.dataset])
    return result, config, prompts


def export_for_registry(result: Any, out: Path) -> Path:
    """The run's pipeline as the folder to register: UNet in float16 (half the bytes in Redis)."""
    from training.diffusion.trainer import export_pipeline

    return export_pipeline(Path(result.pipeline), out / "export", half=True)


def evaluate(settings: Settings, folder: Path, dataset: str, count: int, device: str) -> dict[str, float]:
    """Scores of the pipeline in ``folder`` on ``dataset``'s answer key ({} for a dataset with none)."""
    if dataset not in SCORED_DATASETS["diffusion"]:
        return {}
    from training.diffusion.evaluate import evaluate_generator, pipeline_generator
    from worker.engines.diffusion import DiffusionEngine

    engine = DiffusionEngine(str(folder), settings.data_dir, device=device)
    generate = pipeline_generator(engine.pipe, steps=EVAL_STEPS, guidance=EVAL_GUIDANCE)
    scores = evaluate_generator(generate, count=count, r_precision=False, dataset=dataset)
    return {k: float(v) for k, v in scores.items() if isinstance(v, int | float) and k != "images_per_s"}


def version_of(folder: Path) -> str:
    """The version label of a pipeline folder (its ``imaginebot.json``), else the folder's name."""
    meta = folder / "imaginebot.json"
    try:
        return str(json.loads(meta.read_text()).get("version") or folder.name)
    except (OSError, ValueError):
        return folder.name
