"""Train the small pixel-space diffusion model (:mod:`training.diffusion.pipeline`) on a captioned dataset.

Standard DDPM training: pick a timestep, noise the image, regress the noise (MSE), with caption
dropout for classifier-free guidance and an EMA of the UNet. Output folder layout::

    out/pipeline/              the EMA weights as a diffusers pipeline folder (loadable by the engine)
    out/state/                 resumable state: weights, EMA, optimiser moments, RNG, step
    out/losses.jsonl           one line per step
    out/loss_curve.png         redrawn at every checkpoint
    out/samples/step_NNNNNN.png fixed prompts x fixed seeds at every checkpoint; latest.png is the newest
"""

from __future__ import annotations

import copy
import json
import math
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from diffusers import DDIMScheduler, DDPMScheduler, UNet2DConditionModel
from PIL import Image
from rich.console import Console

from training.diffusion.config import DiffusionConfig
from training.diffusion.pipeline import PixelDiffusionPipeline
from training.diffusion.tiny import META_FILE
from training.grid import labelled_grid
from training.loss_log import plot_curves
from training.precision import autocast, bf16_enabled
from training.resume_state import has_training_state, load_training_state, save_training_state
from training.run_log import RunLog
from training.seeds import seed_generators
from training.text.encoders import load_text_encoder
from training.text.widening import load_widened

PIPELINE_DIR = "pipeline"
STATE_DIR = "state"
TRAIN_CONFIG_FILE = "train_config.json"
SAMPLE_SEEDS = (0, 1, 2, 3)
#: Config fields a resumed run may change; the saved config wins for the rest.
RESUME_MAY_CHANGE = ("steps", "version", "bf16_on_cpu")

#: Called after every step with (step, total, loss); returning True stops training early.
TrainProgress = Callable[[int, int, float], bool | None]


@dataclass
class DiffusionTrainResult:
    """Where a finished (or stopped) run left its outputs."""

    step: int
    pipeline: Path
    loss_curve: Path
    sample_grid: Path
    seconds: float
    last_loss: float


def load_images(dataset: Sequence[tuple[torch.Tensor, str]], config: DiffusionConfig) -> torch.Tensor:
    """All of ``dataset``'s images at ``config.imsize`` (antialiased downsampling), ``[N, 3, S, S]``."""
    images = torch.stack([dataset[i][0] for i in range(len(dataset))])
    if images.shape[-1] != config.imsize:
        images = F.interpolate(images, size=(config.imsize, config.imsize), mode="bilinear", antialias=True)
    return images.clamp(-1, 1)


def build_pipeline(config: DiffusionConfig, unet: UNet2DConditionModel) -> PixelDiffusionPipeline:
    """The inference pipeline around ``unet``: DDIM over the training noise schedule.

    DDIM with "trailing" spacing starts at the last training timestep (pure noise under the cosine
    schedule) and clips its x0 estimate to the pixel range. DPM-Solver++ was tried first: with the
    cosine schedule it produced saturated noise even with ``lambda_min_clipped``.
    """
    scheduler = DDIMScheduler(
        num_train_timesteps=config.num_train_timesteps,
        beta_schedule=config.beta_schedule,
        timestep_spacing="trailing",
        clip_sample=True,
    )
    return PixelDiffusionPipeline(
        unet=unet,
        scheduler=scheduler,
        text_encoder_name=config.text_encoder,
        default_guidance=config.guidance,
    )


def save_pipeline(config: DiffusionConfig, unet: UNet2DConditionModel, folder: Path, extra: dict) -> None:
    """Write ``unet`` as a diffusers pipeline folder plus ``imaginebot.json`` (version, training info)."""
    _write_folder(build_pipeline(config, unet), folder, {"version": config.version, **extra})


def export_pipeline(
    run_pipeline: Path, target: Path, half: bool = True, guidance: float | None = None
) -> Path:
    """Copy a run's pipeline folder to ``target`` (e.g. ``training/shipped_models/...``), with the UNet
    stored in float16 when ``half`` (half the size; the engine loads it back as float32 on a CPU,
    which changes pixels by at most a few levels). ``guidance``: a new ``default_guidance``."""
    pipe = PixelDiffusionPipeline.from_pretrained(str(run_pipeline), local_files_only=True)
    if guidance is not None:
        pipe.register_to_config(default_guidance=guidance)
    if half:
        pipe.unet.to(torch.float16)
    meta = json.loads((run_pipeline / META_FILE).read_text())
    _write_folder(pipe, target, {**meta, "stored_dtype": "float16" if half else "float32"})
    return target


def _write_folder(pipe: PixelDiffusionPipeline, folder: Path, meta: dict) -> None:
    # Written beside the target, then swapped in, so the engine never loads a half-written folder.
    tmp, old = folder.with_name(folder.name + ".tmp"), folder.with_name(folder.name + ".old")
    shutil.rmtree(tmp, ignore_errors=True)
    pipe.save_pretrained(tmp, safe_serialization=True)
    (tmp / META_FILE).write_text(json.dumps(meta, indent=2))
    if folder.exists():
        folder.replace(old)
    tmp.replace(folder)
    shutil.rmtree(old, ignore_errors=True)


def sample_grid(
    pipe: PixelDiffusionPipeline,
    prompts: list[str],
    seeds: Sequence[int] = SAMPLE_SEEDS,
    steps: int = 20,
    guidance: float = 2.0,
    scale: int = 2,
) -> Image.Image:
    """One row per prompt (labelled), one column per seed, each tile upscaled ``scale``× (nearest)."""
    gens = seed_generators([s for _ in prompts for s in seeds])
    all_prompts = [p for p in prompts for _ in seeds]
    images = pipe(all_prompts, num_inference_steps=steps, guidance_scale=guidance, generator=gens).images
    n = len(seeds)
    return labelled_grid([images[r * n : (r + 1) * n] for r in range(len(prompts))], prompts, scale)


@dataclass
class DiffusionModels:
    """What a run optimises (the UNet), the EMA copy that is shipped, the optimiser, the noise
    schedule's cumulative alphas and the one RNG that draws batches, timesteps, dropout and noise."""

    unet: UNet2DConditionModel
    ema: UNet2DConditionModel
    opt: torch.optim.AdamW
    alphas: torch.Tensor
    rng: torch.Generator


def train(
    config: DiffusionConfig,
    dataset: Sequence[tuple[torch.Tensor, str]],
    out_dir: str | Path,
    *,
    max_steps: int | None = None,
    resume: bool = False,
    device: str = "cpu",
    progress: TrainProgress | None = None,
    console: Console | None = None,
    tensorboard: Path | None = None,
    init_from: Path | None = None,
) -> DiffusionTrainResult:
    """Train for ``max_steps`` (default ``config.steps``) steps, writing the pipeline folder,
    resumable state, losses, loss curve and sample grids under ``out_dir`` (and TensorBoard event
    files under ``tensorboard`` when given). With ``resume`` the run continues exactly where the one
    in ``out_dir`` stopped; otherwise ``init_from`` warm-starts the UNet (see :func:`start_run`).
    """
    out, console = Path(out_dir), console or Console()
    config, m, step = start_run(config, out / STATE_DIR, resume, init_from, device, console)
    total = max_steps if max_steps is not None else config.steps
    data = TrainingData(dataset, config, device)
    prompts = list(config.sample_prompts or getattr(dataset, "sample_prompts", data.unique[:8]))

    loss_value = float("nan")
    m.unet.train()
    with RunLog(out, "diffusion", total, step, console, tensorboard) as log:
        while step < total:
            noisy, t, cond, noise = data.noised_batch(m, config)
            for group in m.opt.param_groups:
                group["lr"] = config.lr * min(1.0, (step + 1) / max(config.warmup_steps, 1))
            loss = train_step(m.unet, m.ema, m.opt, config, step, noisy, t, cond, noise)
            step += 1
            loss_value = float(loss.detach())
            if not math.isfinite(loss_value):
                raise FloatingPointError(f"loss became {loss_value} at step {step}")
            log.step(step, {"loss": loss_value}, f"diffusion loss {loss_value:.4f}")

            stop = bool(progress and progress(step, total, loss_value))
            if step % config.checkpoint_every == 0 or step == total or stop:
                save_run(m, config, log, step, loss_value, prompts)
            if stop:
                break
        if step == log.start_step:
            save_run(m, config, log, step, loss_value, prompts)
    return DiffusionTrainResult(
        step, out / PIPELINE_DIR, out / "loss_curve.png", log.latest_grid, log.seconds, loss_value
    )


def start_run(
    config: DiffusionConfig,
    state_dir: Path,
    resume: bool,
    init_from: Path | None,
    device: str,
    console: Console,
) -> tuple[DiffusionConfig, DiffusionModels, int]:
    """The run's config, models and first step.

    With ``resume`` and a saved state in ``state_dir``, the run continues exactly where it stopped
    (the saved config wins, except :data:`RESUME_MAY_CHANGE`). Otherwise, with ``init_from`` (a
    pipeline folder such as the shipped model, whose UNet has the same shape), the UNet and its EMA
    start from its weights (a warm start: fresh optimiser, step 0, learning-rate warm-up again).
    """
    resuming = resume and has_training_state(state_dir)
    if resuming:
        config = config.resumed_from(state_dir / TRAIN_CONFIG_FILE, keep=RESUME_MAY_CHANGE)
    torch.manual_seed(config.seed)
    unet = UNet2DConditionModel(**config.unet_kwargs()).to(device)
    ema = copy.deepcopy(unet).requires_grad_(False)
    opt = torch.optim.AdamW(unet.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    schedule = DDPMScheduler(
        num_train_timesteps=config.num_train_timesteps, beta_schedule=config.beta_schedule
    )
    m = DiffusionModels(
        unet, ema, opt, schedule.alphas_cumprod.to(device), torch.Generator().manual_seed(config.seed)
    )
    step = 0
    if resuming:
        meta, extra = load_training_state(state_dir, {"unet": unet, "ema": ema}, {"opt": opt})
        step = int(meta["step"])
        m.rng.set_state(extra["rng"])
        console.print(f"resumed from {state_dir} at step {step}")
    elif init_from is not None:
        warm = UNet2DConditionModel.from_pretrained(Path(init_from) / "unet", local_files_only=True)
        weights = {k: v.float() for k, v in warm.state_dict().items()}
        load_widened(unet, weights)  # a narrower text condition there gets zero weights for the rest
        load_widened(ema, weights)
        console.print(f"UNet initialised from {init_from}")
    return config, m, step


class TrainingData:
    """The whole dataset on the device: images at ``config.imsize`` and each caption's embedding."""

    def __init__(
        self, dataset: Sequence[tuple[torch.Tensor, str]], config: DiffusionConfig, device: str
    ) -> None:
        self.images = load_images(dataset, config).to(device)
        captions = list(getattr(dataset, "captions", None) or [dataset[i][1] for i in range(len(dataset))])
        encoder = load_text_encoder(config.text_encoder, device)
        self.unique = sorted(set(captions))
        chunks = [self.unique[i : i + 256] for i in range(0, len(self.unique), 256)]
        self.table = torch.cat([encoder.encode(chunk) for chunk in chunks]).to(device)
        index = {c: i for i, c in enumerate(self.unique)}
        self.row = torch.tensor([index[c] for c in captions])

    def noised_batch(
        self, m: DiffusionModels, config: DiffusionConfig
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """A random batch noised at random timesteps: ``(noisy, t, cond, noise)``; captions are
        replaced by the zero vector with probability ``config.cond_dropout``."""
        device = self.images.device
        index = torch.randint(len(self.images), (config.batch_size,), generator=m.rng)
        x0 = self.images[index.to(device)]
        cond = self.table[self.row[index].to(device)]
        drop = torch.rand(len(index), generator=m.rng).to(device) < config.cond_dropout
        cond = torch.where(drop[:, None], torch.zeros_like(cond), cond)
        t = torch.randint(0, config.num_train_timesteps, (len(index),), generator=m.rng).to(device)
        noise = torch.randn(x0.shape, generator=m.rng).to(device)
        a = m.alphas[t].view(-1, 1, 1, 1)
        return a.sqrt() * x0 + (1 - a).sqrt() * noise, t, cond, noise


def save_run(
    m: DiffusionModels, config: DiffusionConfig, log: RunLog, step: int, loss: float, prompts: list[str]
) -> Path:
    """Write the resumable state, the EMA pipeline folder, the loss curve and a sample grid; returns
    the grid's path."""
    state_dir = log.out / STATE_DIR
    state_dir.mkdir(parents=True, exist_ok=True)
    config.save(state_dir / TRAIN_CONFIG_FILE)
    save_training_state(
        state_dir, {"unet": m.unet, "ema": m.ema}, {"opt": m.opt}, {"step": step}, {"rng": m.rng.get_state()}
    )
    info = {"step": step, "images_seen": step * config.batch_size, "loss": loss}
    save_pipeline(config, m.ema, log.out / PIPELINE_DIR, info)
    plot_curves(log.history, ["loss"], log.out / "loss_curve.png", ylabel="noise MSE", log=True)
    pipe = build_pipeline(config, m.ema)
    pipe.set_progress_bar_config(disable=True)
    m.ema.eval()
    return log.grid(sample_grid(pipe, prompts), f"step_{step:06d}.png", step)


def train_step(
    unet: UNet2DConditionModel,
    ema: UNet2DConditionModel,
    opt: torch.optim.Optimizer,
    config: DiffusionConfig,
    step: int,
    noisy: torch.Tensor,
    t: torch.Tensor,
    cond: torch.Tensor,
    noise: torch.Tensor,
) -> torch.Tensor:
    """One optimiser step on a noised batch: predict the noise (under bf16 autocast where
    ``config`` and the device allow it), MSE in float32, clip, AdamW, then the EMA. Returns the loss."""
    with autocast(noisy.device, bf16_enabled(noisy.device, config.bf16_on_gpu, config.bf16_on_cpu)):
        pred = unet(noisy, t, encoder_hidden_states=cond[:, None, :], class_labels=cond).sample
    loss = F.mse_loss(pred.to(noise.dtype), noise)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
    opt.step()
    with torch.no_grad():
        decay = min(config.ema_decay, (1 + step) / (10 + step))
        torch._foreach_lerp_(list(ema.parameters()), list(unet.parameters()), 1 - decay)
    return loss.detach()
