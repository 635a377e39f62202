"""Time one DF-GAN training step: the trainer's ``train_step`` (ours) against a plain eager step.

One step = discriminator update on real / fake / mismatched pairs (hinge) + MA-GP, then the
generator update, then the EMA. The baseline below is that step written out the straightforward
way: the paper's unfused affine MLPs, contiguous (NCHW) tensors, gradients for everything that
requires them, a Python loop for the EMA, default Adam. Both start from the same weights and see
the same batch; they are timed in the same process, alternating rounds so that background load
hits both alike, and the ratio of their medians is printed.

    .venv/bin/python benchmarks/dfgan_train_step.py               # 64x64, batch 32, nf 32, 1 thread
    .venv/bin/python benchmarks/dfgan_train_step.py --compile     # also time ours with compile_generator
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from training.dfgan.config import DFGANConfig  # noqa: E402
from training.dfgan.losses import (  # noqa: E402
    discriminator_loss,
    generator_loss,
    matching_aware_gradient_penalty,
)
from training.dfgan.model import NetG  # noqa: E402
from training.dfgan.trainer import Models, build_models, train_step  # noqa: E402


def plain_generator(netG: NetG, noise: torch.Tensor, sentence: torch.Tensor) -> torch.Tensor:
    """NetG's forward with each affine's gamma/beta MLPs run on their own, as the paper draws it."""
    h = netG.fc(noise).view(noise.size(0), 8 * netG.ngf, 4, 4)
    cond = torch.cat((noise, sentence), dim=1)
    for block in netG.blocks:
        x = F.interpolate(h, scale_factor=2)
        r = block.c1(block.fuse1.forward_unfused(x, cond))
        r = block.c2(block.fuse2.forward_unfused(r, cond))
        h = block.shortcut(x) + r
    return netG.to_rgb(h)


def baseline_models(config: DFGANConfig, device: str = "cpu") -> Models:
    """The same initial weights as :func:`build_models`, in the plain layout with default Adam."""
    plain = replace(config, channels_last=False, compile_generator=False)
    m = build_models(plain, device)
    m.opt_g = torch.optim.Adam(m.netG.parameters(), lr=config.lr_g, betas=config.betas)
    m.opt_d = torch.optim.Adam(
        [*m.netD.parameters(), *m.netC.parameters()], lr=config.lr_d, betas=config.betas
    )
    return m


def baseline_step(
    m: Models, config: DFGANConfig, real: torch.Tensor, sent: torch.Tensor, noise: torch.Tensor
) -> dict[str, float]:
    """The DF-GAN step written plainly (the reference for speed and for the losses)."""
    real = real.clone().requires_grad_()
    sent = sent.clone().requires_grad_()
    # discriminator
    feats_real = m.netD(real)
    score_real = m.netC(feats_real, sent)
    score_mis = m.netC(feats_real.roll(-1, dims=0), sent)
    fake = plain_generator(m.netG, noise, sent.detach())
    score_fake = m.netC(m.netD(fake.detach()), sent)
    loss_d = discriminator_loss(score_real, score_fake, score_mis, config.loss)
    gp = matching_aware_gradient_penalty(real, sent, score_real, config.gp_k, config.gp_p)
    m.opt_d.zero_grad()
    (loss_d + gp).backward()
    m.opt_d.step()
    # generator
    loss_g = generator_loss(m.netC(m.netD(fake), sent.detach()), config.loss)
    m.opt_g.zero_grad()
    loss_g.backward()
    m.opt_g.step()
    # EMA
    step = int(m.opt_g.state[next(iter(m.netG.parameters()))]["step"])
    decay = min(config.ema_decay, (1 + step) / (10 + step))
    with torch.no_grad():
        for p_ema, p in zip(m.ema.parameters(), m.netG.parameters(), strict=True):
            p_ema.mul_(decay).add_(p, alpha=1 - decay)
    return {
        "loss_d": loss_d.item(),
        "loss_g": loss_g.item(),
        "gp": gp.item(),
        "score_real": score_real.mean().item(),
        "score_fake": score_fake.mean().item(),
        "score_mis": score_mis.mean().item(),
    }


def random_batch(
    config: DFGANConfig, batch: int, seed: int = 0, device: str = "cpu"
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Images in [-1, 1], random unit sentence vectors (no text encoder needed), noise."""
    g = torch.Generator().manual_seed(seed)
    real = torch.rand(batch, 3, config.imsize, config.imsize, generator=g) * 2 - 1
    sent = F.normalize(torch.randn(batch, config.cond_dim, generator=g), dim=1) * config.cond_scale
    noise = torch.randn(batch, config.nz, generator=g)
    return real.to(device), sent.to(device), noise.to(device)


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def time_steps(step: Callable[[], object], rounds: list[list[float]], count: int, device: str) -> None:
    """Append ``count`` per-step wall times (seconds) of ``step()`` to ``rounds``."""
    times = []
    for _ in range(count):
        _sync(device)
        start = time.perf_counter()
        step()
        _sync(device)
        times.append(time.perf_counter() - start)
    rounds.append(times)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--nf", type=int, default=32, help="ngf = ndf")
    parser.add_argument("--imsize", type=int, default=64)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--steps", type=int, default=12, help="timed steps per variant")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds the steps are split into")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--compile", action="store_true", help="also time ours with compile_generator")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    config = DFGANConfig(imsize=args.imsize, ngf=args.nf, ndf=args.nf, cond_dim=384, batch_size=args.batch)
    real, sent, noise = random_batch(config, args.batch, device=args.device)
    variants: dict[str, Callable[[], object]] = {}
    base = baseline_models(config, args.device)
    variants["baseline (plain eager)"] = lambda: baseline_step(base, config, real, sent, noise)
    ours = build_models(config, args.device)
    variants["ours (train_step)"] = lambda: train_step(ours, config, real, sent, noise)
    if args.compile:
        compiled_config = replace(config, compile_generator=True)
        compiled = build_models(compiled_config, args.device)
        variants["ours + compile_generator"] = lambda: train_step(
            compiled, compiled_config, real, sent, noise
        )

    print(
        f"DF-GAN train step: {args.imsize}x{args.imsize}, batch {args.batch}, ngf=ndf={args.nf}, "
        f"cond 384, device {args.device}, torch {torch.__version__}, {torch.get_num_threads()} thread(s)"
    )
    for name, fn in variants.items():
        start = time.perf_counter()
        for _ in range(args.warmup):
            fn()
        print(f"  warm-up {name}: {args.warmup} steps in {time.perf_counter() - start:.1f}s")
    times: dict[str, list[list[float]]] = {name: [] for name in variants}
    per_round = max(1, args.steps // args.rounds)
    for _ in range(args.rounds):
        for name, fn in variants.items():
            time_steps(fn, times[name], per_round, args.device)
    medians = {name: statistics.median(t for r in rounds for t in r) for name, rounds in times.items()}
    reference = medians["baseline (plain eager)"]
    for name, median in medians.items():
        flat = [t for r in times[name] for t in r]
        print(
            f"  {name:<26} median {median * 1000:8.1f} ms/step  (min {min(flat) * 1000:.1f}, "
            f"max {max(flat) * 1000:.1f}, n={len(flat)})  speed-up x{reference / median:.2f}"
        )


if __name__ == "__main__":
    main()
