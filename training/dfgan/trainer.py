"""Train DF-GAN. The whole optimisation step is :func:`train_step`; :func:`train` adds the loop,
EMA, checkpoints, resume, loss curve and sample grids.

Output folder layout::

    out/checkpoint/            config.json + generator.safetensors (EMA) + training_state.*
    out/losses.jsonl           one line of losses per step
    out/loss_curve.png         redrawn every epoch and at the end
    out/samples/epoch_NNN.png  fixed prompts x fixed seeds, every epoch; latest.png is the newest
    out/caption_embeddings.safetensors   the frozen text encoder's output for every caption
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from PIL import Image
from rich.console import Console
from safetensors.torch import load_file, save_file

from training.data import CaptionedDataset
from training.dfgan.checkpoint import (
    CONFIG_FILE,
    GENERATOR_FILE,
    LoadedGenerator,
    build_generator,
    save_checkpoint,
)
from training.dfgan.conditioning import sentence_vectors
from training.dfgan.config import DFGANConfig
from training.dfgan.losses import (
    discriminator_loss,
    generator_loss,
    matching_aware_gradient_penalty,
)
from training.dfgan.model import NetC, NetD, NetG
from training.grid import labelled_grid
from training.images import to_pil
from training.loss_log import plot_curves
from training.precision import autocast, bf16_enabled
from training.resume_state import has_training_state, load_training_state, save_training_state
from training.run_log import RunLog, epoch_batch
from training.text.encoders import TextEncoder, load_text_encoder
from training.text.widening import load_widened

CHECKPOINT_DIR = "checkpoint"
#: Seeds of the noise in every sample grid, so grids of different epochs are comparable.
SAMPLE_SEEDS = (0, 1, 2, 3)
#: Config fields a resumed run may change; the saved config wins for the rest.
RESUME_MAY_CHANGE = ("epochs", "version", "bf16_on_cpu", "compile_generator")

#: Called after every step with (step, total_steps, losses); returning True stops training early.
TrainProgress = Callable[[int, int, dict[str, float]], bool | None]


@dataclass
class Models:
    """Everything that is optimised, and the EMA copy of the generator that is shipped."""

    netG: NetG
    netD: NetD
    netC: NetC
    ema: NetG
    opt_g: torch.optim.Adam
    opt_d: torch.optim.Adam


@dataclass
class TrainResult:
    """Where a finished (or stopped) run left its outputs."""

    step: int
    checkpoint: Path
    loss_curve: Path
    sample_grid: Path
    seconds: float
    last_losses: dict[str, float] = field(default_factory=dict)


def build_models(config: DFGANConfig, device: str) -> Models:
    """Generator, discriminator, conditional head, EMA generator and their Adam optimisers,
    laid out for speed as ``config`` asks (channels-last, compiled generator)."""
    torch.manual_seed(config.seed)
    netG = build_generator(config).to(device)
    netD = NetD(config.ndf, config.imsize).to(device)
    netC = NetC(config.ndf, config.cond_dim).to(device)
    if config.channels_last:
        for net in (netG, netD, netC):
            net.to(memory_format=torch.channels_last)
    ema = copy.deepcopy(netG).eval().requires_grad_(False)
    if config.compile_generator:
        netG.compile()  # in place: parameter names (and so checkpoints) stay as they are
    # Not fused=True: with channels-last parameters and the contiguous moments a resumed run loads,
    # fused CPU Adam updated differently (a resumed run drifted from an uninterrupted one), and
    # Adam is ~1 % of a CPU step anyway.
    opt_g = torch.optim.Adam(netG.parameters(), lr=config.lr_g, betas=config.betas)
    opt_d = torch.optim.Adam([*netD.parameters(), *netC.parameters()], lr=config.lr_d, betas=config.betas)
    return Models(netG, netD, netC, ema, opt_g, opt_d)


def train_step(
    m: Models, config: DFGANConfig, real: torch.Tensor, sent: torch.Tensor, noise: torch.Tensor
) -> dict[str, float]:
    """One DF-GAN step: update D (+ MA-GP) on real / fake / mismatched pairs, then G, then the EMA."""
    if config.channels_last:
        real = real.contiguous(memory_format=torch.channels_last)
    # MA-GP differentiates w.r.t. image and sentence: fresh leaves, so the caller's tensors are untouched.
    real, sent = real.detach().requires_grad_(), sent.detach().requires_grad_()
    d_params = [*m.netD.parameters(), *m.netC.parameters()]
    mixed = autocast(real.device, bf16_enabled(real.device, config.bf16_on_gpu, config.bf16_on_cpu))
    # Scores leave autocast in at least float32 (a float64 model keeps float64, as the tests use).
    loss_dtype = torch.promote_types(real.dtype, torch.float32)

    # --- discriminator ---
    with mixed:
        feats_real = m.netD(real)
        score_real = m.netC(feats_real, sent).to(loss_dtype)
        score_mis = m.netC(feats_real.roll(-1, dims=0), sent).to(loss_dtype)  # neighbour's caption
        fake = m.netG(noise, sent.detach())  # kept for the G step: G runs once per step
        score_fake = m.netC(m.netD(fake.detach()), sent).to(loss_dtype)
    loss_d = discriminator_loss(score_real, score_fake, score_mis, config.loss)
    gp = (
        matching_aware_gradient_penalty(real, sent, score_real, config.gp_k, config.gp_p)
        if config.gp_k > 0
        else torch.zeros((), device=real.device)
    )
    m.opt_d.zero_grad(set_to_none=True)
    (loss_d + gp).backward(inputs=d_params)  # no gradient for the input image or sentence
    m.opt_d.step()

    # --- generator ---
    with mixed:
        score_g = m.netC(m.netD(fake), sent.detach()).to(loss_dtype)
    loss_g = generator_loss(score_g, config.loss)
    m.opt_g.zero_grad(set_to_none=True)
    loss_g.backward(inputs=list(m.netG.parameters()))  # D's weight gradients are skipped, not computed
    m.opt_g.step()

    # --- EMA of the generator, the weights we ship ---
    with torch.no_grad():
        ema_params, g_params = list(m.ema.parameters()), list(m.netG.parameters())
        if config.ema_decay > 0:
            step = int(m.opt_g.state[g_params[0]]["step"])
            decay = min(config.ema_decay, (1 + step) / (10 + step)) if config.ema_warmup else config.ema_decay
            torch._foreach_lerp_(ema_params, g_params, 1 - decay)
        else:
            torch._foreach_copy_(ema_params, g_params)
    # One device sync for all the figures instead of one per figure.
    stats = (
        torch.stack([loss_d, loss_g, gp, score_real.mean(), score_fake.mean(), score_mis.mean()])
        .detach()
        .tolist()
    )
    return dict(zip(("loss_d", "loss_g", "gp", "score_real", "score_fake", "score_mis"), stats, strict=True))


def embed_captions(
    captions: Sequence[str], encoder: TextEncoder, config: DFGANConfig, cache: Path | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Embed every distinct caption once (the encoder is frozen). Returns ``(table [U, dim],
    row [len(captions)])`` so caption ``i``'s embedding is ``table[row[i]]``. Reuses ``cache`` when it
    was written for the same captions and encoder."""
    unique = sorted(set(captions))
    key = hashlib.sha256(
        json.dumps([config.text_encoder, config.max_caption_tokens, config.cond_scale, unique]).encode()
    ).hexdigest()
    table: torch.Tensor | None = None
    if cache is not None and cache.is_file():
        from safetensors import safe_open

        with safe_open(str(cache), "pt") as f:
            if (f.metadata() or {}).get("key") == key:
                table = load_file(cache)["embeddings"]
    if table is None:
        chunks = [unique[i : i + 256] for i in range(0, len(unique), 256)]
        table = torch.cat([sentence_vectors(encoder, chunk, config).cpu() for chunk in chunks])
        if cache is not None:
            cache.parent.mkdir(parents=True, exist_ok=True)
            save_file({"embeddings": table.contiguous()}, cache, metadata={"key": key})
    index = {c: i for i, c in enumerate(unique)}
    return table, torch.tensor([index[c] for c in captions])


def train(
    config: DFGANConfig,
    dataset: CaptionedDataset,
    out_dir: str | Path,
    *,
    max_steps: int | None = None,
    resume: bool = False,
    device: str = "cpu",
    progress: TrainProgress | None = None,
    console: Console | None = None,
    tensorboard: Path | None = None,
    init_from: Path | None = None,
) -> TrainResult:
    """Train on ``dataset`` for ``max_steps`` steps (default ``config.epochs`` epochs), writing
    checkpoints, losses, loss curve and sample grids under ``out_dir`` (and TensorBoard event files
    under ``tensorboard`` when given). With ``resume`` the run continues exactly where the one in
    ``out_dir`` stopped; otherwise ``init_from`` warm-starts the generator (see :func:`start_run`).
    """
    out, console = Path(out_dir), console or Console()
    ckpt_dir = out / CHECKPOINT_DIR
    config, m, noise_rng, step = start_run(config, ckpt_dir, resume, init_from, device, console)
    steps_per_epoch = max(len(dataset) // config.batch_size, 1)
    total = max_steps if max_steps is not None else config.epochs * steps_per_epoch
    encoder = load_text_encoder(config.text_encoder, device)
    captions = CaptionTable(dataset, encoder, config, out / "caption_embeddings.safetensors", device)
    ema = LoadedGenerator(m.ema, config, config.version, encoder)  # draws the sample grids
    prompts = list(config.sample_prompts or dataset.sample_prompts)

    losses: dict[str, float] = {}
    m.netG.train(), m.netD.train(), m.netC.train()
    with RunLog(out, "DF-GAN", total, step, console, tensorboard) as log:
        while step < total:
            items = [dataset[i] for i in epoch_batch(len(dataset), config.batch_size, config.seed, step)]
            real = torch.stack([image for image, _ in items]).to(device)
            sent = captions.lookup([caption for _, caption in items])
            noise = torch.randn(len(items), config.nz, generator=noise_rng).to(device)

            losses = train_step(m, config, real, sent, noise)
            step += 1
            log.step(step, losses, f"D {losses['loss_d']:.3f} G {losses['loss_g']:.3f}")

            stop = bool(progress and progress(step, total, losses))
            if step % steps_per_epoch == 0:
                plot_losses(log.history, out / "loss_curve.png")
                log.grid(sample_grid(ema, prompts), f"epoch_{step // steps_per_epoch:03d}.png", step)
            if step % config.checkpoint_every == 0 or step == total or stop:
                save_run(m, config, ckpt_dir, step, steps_per_epoch, noise_rng)
            if stop:
                break
        if step == 0 or step % config.checkpoint_every:
            save_run(m, config, ckpt_dir, step, steps_per_epoch, noise_rng)
        plot_losses(log.history, out / "loss_curve.png")
        log.save_latest(sample_grid(ema, prompts))
    return TrainResult(step, ckpt_dir, out / "loss_curve.png", log.latest_grid, log.seconds, losses)


def start_run(
    config: DFGANConfig, ckpt_dir: Path, resume: bool, init_from: Path | None, device: str, console: Console
) -> tuple[DFGANConfig, Models, torch.Generator, int]:
    """The run's config, models, noise RNG and first step.

    With ``resume`` and a checkpoint in ``ckpt_dir``, everything continues from it exactly (weights,
    EMA, optimiser moments, RNG state, data order); the saved config then wins over ``config`` except
    for :data:`RESUME_MAY_CHANGE`. Otherwise, with ``init_from`` (a checkpoint folder such as a shipped
    model), the generator and its EMA start from that folder's weights (a warm start: discriminator
    and optimisers start fresh, the step count at 0).
    """
    resuming = resume and has_training_state(ckpt_dir)
    if resuming:
        config = config.resumed_from(ckpt_dir / CONFIG_FILE, keep=RESUME_MAY_CHANGE)
    m = build_models(config, device)
    noise_rng = torch.Generator().manual_seed(config.seed)
    step = 0
    if resuming:
        step = restore(m, noise_rng, ckpt_dir)
        console.print(f"resumed from {ckpt_dir} at step {step}")
    elif init_from is not None:
        warm_start(m, init_from)
        console.print(f"generator initialised from {init_from}")
    return config, m, noise_rng, step


def _state(m: Models) -> tuple[dict[str, torch.nn.Module], dict[str, torch.optim.Optimizer]]:
    """The modules and optimisers a resumable state holds, by name."""
    return {"netG": m.netG, "netD": m.netD, "netC": m.netC, "ema": m.ema}, {
        "opt_g": m.opt_g,
        "opt_d": m.opt_d,
    }


def save_run(
    m: Models,
    config: DFGANConfig,
    ckpt_dir: Path,
    step: int,
    steps_per_epoch: int,
    noise_rng: torch.Generator,
) -> None:
    """Write the shipped checkpoint (EMA generator + config) and the resumable training state."""
    info = {"step": step, "epoch": step / steps_per_epoch, "images_seen": step * config.batch_size}
    save_checkpoint(ckpt_dir, m.netG, config, info, ema=m.ema)
    save_training_state(ckpt_dir, *_state(m), {"step": step}, {"noise_rng": noise_rng.get_state()})


def restore(m: Models, noise_rng: torch.Generator, ckpt_dir: Path) -> int:
    """Load the training state :func:`save_run` wrote into ``m`` and ``noise_rng``; returns its step."""
    meta, extra = load_training_state(ckpt_dir, *_state(m))
    noise_rng.set_state(extra["noise_rng"])
    return int(meta["step"])


def warm_start(m: Models, folder: Path) -> None:
    """Start the generator and its EMA from the generator weights in checkpoint ``folder``; a
    narrower text condition there is widened with zero weights (:mod:`training.text.widening`)."""
    weights = load_file(Path(folder) / GENERATOR_FILE)
    for net in (m.netG, m.ema):
        load_widened(getattr(net, "_orig_mod", net), weights)


class CaptionTable:
    """Condition vectors of a dataset's captions, embedded once (the text encoder is frozen).

    Items may return any of an image's captions (random pairing): all of them are embedded up front,
    and :meth:`lookup` finds the caption each item actually returned.
    """

    def __init__(
        self, dataset: CaptionedDataset, encoder: TextEncoder, config: DFGANConfig, cache: Path, device: str
    ) -> None:
        self.encoder, self.config, self.device = encoder, config, device
        pool = list(getattr(dataset, "all_captions", None) or dataset.captions)
        table, _ = embed_captions(pool, encoder, config, cache)
        self.table = table.to(device)
        self.row_of = {caption: i for i, caption in enumerate(sorted(set(pool)))}

    def lookup(self, captions: list[str]) -> torch.Tensor:
        """``[len(captions), cond_dim]`` on the device; a caption the dataset did not list is embedded
        now, once."""
        missing = sorted({c for c in captions if c not in self.row_of})
        if missing:
            self.row_of.update({c: len(self.row_of) + i for i, c in enumerate(missing)})
            extra = sentence_vectors(self.encoder, missing, self.config).to(self.device)
            self.table = torch.cat([self.table, extra])
        return self.table[torch.tensor([self.row_of[c] for c in captions], device=self.device)]


def sample_grid(
    loaded: LoadedGenerator, prompts: list[str], seeds: Sequence[int] = SAMPLE_SEEDS
) -> Image.Image:
    """One row per prompt (labelled), one column per noise seed."""
    return labelled_grid([to_pil(row) for row in loaded.draw_rows(prompts, seeds)], prompts)


def plot_losses(history: list[dict[str, float]], path: Path) -> None:
    """Discriminator, generator and gradient-penalty losses against steps (moving average)."""
    plot_curves(history, ("loss_d", "loss_g", "gp"), path)
