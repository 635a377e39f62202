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
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import torch
from PIL import Image
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from safetensors.torch import load_file, save_file

from training.dfgan.checkpoint import (
    GENERATOR_FILE,
    build_generator,
    has_training_state,
    load_training_state,
    save_checkpoint,
    save_training_state,
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
from training.loss_log import TensorBoardLog, append_history, plot_curves, read_history
from training.precision import autocast, bf16_enabled
from training.text.encoders import TextEncoder, load_text_encoder

CHECKPOINT_DIR = "checkpoint"
#: Seeds of the noise in every sample grid, so grids of different epochs are comparable.
SAMPLE_SEEDS = (0, 1, 2, 3)

#: Called after every step with (step, total_steps, losses); returning True stops training early.
TrainProgress = Callable[[int, int, dict[str, float]], bool | None]


class CaptionedDataset(Protocol):
    """What the trainer needs from a dataset: items ``(image [3,H,W] in [-1,1], caption)``, and
    all captions up front so their embeddings can be computed once."""

    captions: list[str]
    sample_prompts: list[str]

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> tuple[torch.Tensor, str]: ...


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
    under ``tensorboard`` when given).

    With ``resume`` and a checkpoint in ``out_dir``, the run continues from it exactly (weights,
    EMA, optimiser moments, RNG state, data order); the saved config then wins over ``config``
    except for ``epochs``, the ``version`` label and the speed switches (``bf16_on_cpu``,
    ``compile_generator``), which a resumed run may change. Otherwise, with ``init_from`` (a checkpoint
    folder such as a shipped model), the generator and its EMA start from that folder's weights
    (a warm start: discriminator and optimisers start fresh, the step count at 0).
    """
    out = Path(out_dir)
    ckpt_dir = out / CHECKPOINT_DIR
    (out / "samples").mkdir(parents=True, exist_ok=True)
    console = console or Console()
    if resume and has_training_state(ckpt_dir):
        kept = {k: getattr(config, k) for k in ("epochs", "version", "bf16_on_cpu", "compile_generator")}
        config = DFGANConfig.load(ckpt_dir / "config.json")
        for name, value in kept.items():
            setattr(config, name, value)
    steps_per_epoch = max(len(dataset) // config.batch_size, 1)
    total = max_steps if max_steps is not None else config.epochs * steps_per_epoch

    m = build_models(config, device)
    noise_rng = torch.Generator().manual_seed(config.seed)
    step = 0
    if resume and has_training_state(ckpt_dir):
        meta, extra = load_training_state(
            ckpt_dir,
            {"netG": m.netG, "netD": m.netD, "netC": m.netC, "ema": m.ema},
            {"opt_g": m.opt_g, "opt_d": m.opt_d},
        )
        step = int(meta["step"])
        noise_rng.set_state(extra["noise_rng"])
        console.print(f"resumed from {ckpt_dir} at step {step}")
    elif init_from is not None:
        weights = load_file(Path(init_from) / GENERATOR_FILE)
        for net in (m.netG, m.ema):
            getattr(net, "_orig_mod", net).load_state_dict(weights)
        console.print(f"generator initialised from {init_from}")
    history = read_history(out / "losses.jsonl", up_to=step)

    encoder = load_text_encoder(config.text_encoder, device)
    # Items may return any of an image's captions (random pairing): embed all of them once, then
    # look up the caption each item actually returned.
    pool = list(getattr(dataset, "all_captions", None) or dataset.captions)
    table, _ = embed_captions(pool, encoder, config, out / "caption_embeddings.safetensors")
    table = table.to(device)
    row_of = {caption: i for i, caption in enumerate(sorted(set(pool)))}

    def lookup(captions: list[str]) -> torch.Tensor:
        nonlocal table
        missing = sorted({c for c in captions if c not in row_of})
        if missing:  # a dataset that returns captions it did not list: embed them now, once
            row_of.update({c: len(row_of) + i for i, c in enumerate(missing)})
            table = torch.cat([table, sentence_vectors(encoder, missing, config).to(device)])
        return table[torch.tensor([row_of[c] for c in captions], device=device)]

    prompts = list(config.sample_prompts or dataset.sample_prompts)
    prompt_emb = sentence_vectors(encoder, prompts, config).to(device)

    def save(step: int) -> None:
        extra_info = {"step": step, "epoch": step / steps_per_epoch, "images_seen": step * config.batch_size}
        save_checkpoint(ckpt_dir, m.netG, config, extra_info, ema=m.ema)
        save_training_state(
            ckpt_dir,
            {"netG": m.netG, "netD": m.netD, "netC": m.netC, "ema": m.ema},
            {"opt_g": m.opt_g, "opt_d": m.opt_d},
            {"step": step},
            {"noise_rng": noise_rng.get_state()},
        )

    def report_epoch(step: int) -> Path:
        plot_losses(history, out / "loss_curve.png")
        grid = sample_grid(m.ema, prompt_emb, prompts, config.nz)
        path = out / "samples" / f"epoch_{step // steps_per_epoch:03d}.png"
        grid.save(path)
        grid.save(out / "samples" / "latest.png")
        board.image("samples", grid, step)
        return path

    board = TensorBoardLog(tensorboard)
    started, start_step, losses = time.monotonic(), step, {}
    m.netG.train(), m.netD.train(), m.netC.train()
    columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn()]
    with Progress(*columns, console=console, transient=False) as bar:
        task = bar.add_task("DF-GAN", total=total, completed=step)
        while step < total:
            epoch, k = divmod(step, steps_per_epoch)
            # The data order depends only on (seed, epoch), so a resumed run sees the same batches.
            order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(config.seed + epoch))
            index = order[k * config.batch_size : (k + 1) * config.batch_size]
            items = [dataset[int(i)] for i in index]
            real = torch.stack([image for image, _ in items]).to(device)
            sent = lookup([caption for _, caption in items])
            noise = torch.randn(len(index), config.nz, generator=noise_rng).to(device)

            losses = train_step(m, config, real, sent, noise)
            step += 1
            append_history(out / "losses.jsonl", history, {"step": step, **losses})
            board.scalars(history[-1])
            bar.update(task, advance=1, description=f"D {losses['loss_d']:.3f} G {losses['loss_g']:.3f}")
            if not console.is_terminal and (step % 50 == 0 or step == total):
                rate = (time.monotonic() - started) / (step - start_step)
                console.print(f"step {step}/{total} {_fmt(losses)} {rate:.2f}s/step")

            stop = bool(progress and progress(step, total, losses))
            if step % steps_per_epoch == 0:
                report_epoch(step)
            if step % config.checkpoint_every == 0 or step == total or stop:
                save(step)
            if stop:
                break
    if step == 0 or step % config.checkpoint_every:
        save(step)
    plot_losses(history, out / "loss_curve.png")
    grid = sample_grid(m.ema, prompt_emb, prompts, config.nz)
    grid.save(out / "samples" / "latest.png")
    board.close()
    return TrainResult(
        step=step,
        checkpoint=ckpt_dir,
        loss_curve=out / "loss_curve.png",
        sample_grid=out / "samples" / "latest.png",
        seconds=time.monotonic() - started,
        last_losses=losses,
    )


def sample_grid(
    netG: NetG, sentences: torch.Tensor, prompts: list[str], nz: int, seeds: Sequence[int] = SAMPLE_SEEDS
) -> Image.Image:
    """One row per prompt (labelled), one column per noise seed."""
    was_training = netG.training
    netG.eval()
    noise = torch.stack([torch.randn(nz, generator=torch.Generator().manual_seed(s)) for s in seeds])
    noise = noise.to(sentences.device)
    with torch.no_grad():
        rows = [netG(noise, sentences[i : i + 1].expand(len(seeds), -1)) for i in range(len(prompts))]
    netG.train(was_training)
    images = ((torch.stack(rows).clamp(-1, 1) + 1) * 127.5).round().byte().cpu()  # [P, S, 3, H, W]
    tiles = [[Image.fromarray(image.permute(1, 2, 0).numpy()) for image in row] for row in images]
    return labelled_grid(tiles, prompts)


def plot_losses(history: list[dict[str, float]], path: Path) -> None:
    """Discriminator, generator and gradient-penalty losses against steps (moving average)."""
    plot_curves(history, ("loss_d", "loss_g", "gp"), path)


def _fmt(losses: dict[str, float]) -> str:
    return " ".join(f"{k}={v:.3f}" for k, v in losses.items())
