"""What a ``train`` task does for DF-GAN: where a run starts, its config, how it trains, and how the
result and the baseline it must match are scored. The run's life around it (claim, lease, lock, gate,
registry, promotion, chat) is :mod:`worker.train_task`'s, shared with diffusion
(:mod:`worker.train_diffusion`).

A run fine-tunes the model the workers draw with (the promoted version, else the configured or shipped
checkpoint) at a lower generator learning rate; ``from_scratch`` starts from random weights. Every run,
on ``shapes`` or on a community dataset, is scored on the shapes answer key (:mod:`worker.train_gate`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from core.model_versions import ModelRegistry
from core.train_runs import FINETUNE_LR_SCALE, TrainRun
from worker.runtime import Runtime
from worker.train_gate import baseline_of
from worker.train_lease import Heartbeat
from worker.train_report import announce, progress_reporter, short_losses, stopped
from worker.train_run import Trained, TrainOutcome, checkpoint_step, run_dir

#: Base configs per dataset, inside the installed package (a name lookup, never a user path).
BASE_CONFIGS = {"shapes": Path(__file__).resolve().parent.parent / "training/dfgan/configs/shapes-64.json"}
#: Config keys that shape the network: a fine-tune keeps its parent's.
ARCHITECTURE_KEYS = (
    "imsize", "ngf", "ndf", "nz", "cond_dim", "text_encoder", "max_caption_tokens", "cond_scale"
)  # fmt: skip


def train_part(
    rt: Runtime, registry: ModelRegistry, run: TrainRun, heartbeat: Heartbeat, device: str
) -> Trained | TrainOutcome:
    """Train DF-GAN for ``run`` and score the result and the baseline on the same captions."""
    from rich.console import Console

    from training.data.community import training_dataset
    from training.dfgan.trainer import train

    out = run_dir(rt, run.id)
    start_folder, start_config = starting_point(rt, registry, run)
    config = config_for(run, start_config)
    resumed_from = checkpoint_step(out / "checkpoint")
    heartbeat.beat(resumed_from=resumed_from)
    parent = (start_config.get("version") or start_folder.name) if start_folder else None
    announce(rt, run, parent, resumed_from)
    dataset = training_dataset(
        run.dataset, rt.settings.data_dir, imsize=config.imsize, count=run.count or 10_000, seed=config.seed
    )
    result = train(
        config,
        dataset,
        out,
        max_steps=run.max_steps,
        resume=True,
        device=device,
        progress=progress_reporter(rt, run, heartbeat),
        console=Console(quiet=True),
        init_from=start_folder,  # used only when there is no checkpoint of this run to resume
    )
    # A beat now also catches a cancel that came after the last progress report.
    heartbeat.beat(step=result.step, total=result.step, eta_s=0.0, losses=short_losses(result.last_losses))
    halted = stopped(rt, run, heartbeat, f"at step {result.step}")
    if halted is not None:
        return halted
    from training.dfgan.checkpoint import load_generator
    from training.dfgan.evaluate import evaluate_shapes

    # Every run is scored on the shapes answer key (DF-GAN's only one), community datasets too.
    metrics = evaluate_shapes(load_generator(result.checkpoint, device), count=run.eval_count)
    baseline_version, baseline = score_baseline(rt, registry, run, device)
    prompts = list(config.sample_prompts or getattr(dataset, "sample_prompts", None) or [run.dataset])
    return Trained(
        Path(result.checkpoint), result.step, Path(result.loss_curve), Path(result.sample_grid),
        metrics, baseline_version, baseline, prompts,
    )  # fmt: skip


def score_baseline(
    rt: Runtime, registry: ModelRegistry, run: TrainRun, device: str
) -> tuple[str | None, float | None]:
    """(version, score) the new version must match on the shapes answer key: the promoted version's
    stored score (a run on ``shapes`` itself), or that version scored now on the same captions (a run
    on a community dataset, :func:`worker.train_gate.stored_score_applies`); with nothing promoted,
    the default checkpoint the workers use (configured or shipped), scored now; (None, None) when
    that is the random-init placeholder."""
    from training.dfgan.checkpoint import load_generator
    from training.dfgan.evaluate import evaluate_shapes
    from worker.engines.dfgan import resolve_default_checkpoint

    baseline = baseline_of(registry, run, resolve_default_checkpoint(rt.settings.dfgan_checkpoint))
    if baseline.folder is None:
        return baseline.version, baseline.score
    loaded = load_generator(baseline.folder, device)
    return baseline.version or loaded.version, evaluate_shapes(loaded, count=run.eval_count)["all"]


def starting_point(rt: Runtime, registry: ModelRegistry, run: TrainRun) -> tuple[Path | None, dict[str, Any]]:
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


def config_for(run: TrainRun, parent: dict[str, Any] | None = None) -> Any:
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
