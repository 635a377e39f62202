"""CPU training speed of both models: today's step against threads, bf16 autocast and torch.compile.

Every variant runs the trainers' own step functions (``training.dfgan.trainer.train_step``,
``training.diffusion.trainer.train_step``) on the same batch from the same weights; only the
speed switches differ. Variants are timed in one process in alternating rounds, so background
load on a shared machine hits them alike; the ratio of medians to "today" is what to read. bf16
variants are skipped (and say so) on a CPU without native bf16 (AVX512-BF16 / AMX).

With ``--images`` it also draws the shipped DF-GAN's answer-key pictures in float32 and under
bf16 autocast and reads both back with the exact checker: bf16 must not change what is drawn.

    .venv/bin/python benchmarks/cpu_training_speed.py                # both models
    .venv/bin/python benchmarks/cpu_training_speed.py --model dfgan --compile --images
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from dfgan_train_step import random_batch  # noqa: E402

from training.dfgan.config import DFGANConfig  # noqa: E402
from training.dfgan.trainer import build_models  # noqa: E402
from training.dfgan.trainer import train_step as dfgan_step  # noqa: E402
from training.diffusion.config import DiffusionConfig  # noqa: E402
from training.diffusion.trainer import train_step as diffusion_step  # noqa: E402
from training.precision import cpu_has_native_bf16  # noqa: E402

#: (name, threads, bf16, compile)
VARIANTS = [
    ("today (1 thread, fp32)", 1, False, False),
    ("2 threads", 2, False, False),
    ("bf16", 1, True, False),
    ("bf16 + 2 threads", 2, True, False),
]


def dfgan_variants(args: argparse.Namespace) -> dict[str, tuple[int, Callable[[], object]]]:
    """name -> (threads, one training step) for DF-GAN at the shipped recipe's size."""
    base = DFGANConfig(
        imsize=64, ngf=args.nf, ndf=args.nf, cond_dim=384, batch_size=args.dfgan_batch, cond_scale=5.0
    )
    real, sent, noise = random_batch(base, args.dfgan_batch)
    out: dict[str, tuple[int, Callable[[], object]]] = {}
    variants = [*VARIANTS, *([("bf16 + compile G", 1, True, True)] if args.compile else [])]
    for name, threads, bf16, compiled in variants:
        if bf16 and not cpu_has_native_bf16():
            print(f"  skipped {name}: this CPU has no native bf16")
            continue
        config = replace(base, bf16_on_cpu=bf16, compile_generator=compiled)
        m = build_models(config, "cpu")

        def step(m=m, config=config) -> object:  # noqa: ANN001 - bound per variant
            return dfgan_step(m, config, real, sent, noise)

        out[name] = (threads, step)
    return out, args.dfgan_batch


def diffusion_variants(args: argparse.Namespace) -> dict[str, tuple[int, Callable[[], object]]]:
    """name -> (threads, one training step) for the shipped diffusion UNet."""
    from diffusers import UNet2DConditionModel

    base = DiffusionConfig(batch_size=args.diffusion_batch)
    g = torch.Generator().manual_seed(0)
    n = args.diffusion_batch
    noisy = torch.randn(n, 3, base.imsize, base.imsize, generator=g)
    noise = torch.randn(n, 3, base.imsize, base.imsize, generator=g)
    cond = torch.nn.functional.normalize(torch.randn(n, base.cond_dim, generator=g), dim=1)
    t = torch.randint(0, base.num_train_timesteps, (n,), generator=g)
    torch.manual_seed(0)
    template = UNet2DConditionModel(**base.unet_kwargs())
    out: dict[str, tuple[int, Callable[[], object]]] = {}
    for name, threads, bf16, _ in VARIANTS:
        if bf16 and not cpu_has_native_bf16():
            print(f"  skipped {name}: this CPU has no native bf16")
            continue
        config = replace(base, bf16_on_cpu=bf16)
        unet = copy.deepcopy(template).train()
        ema = copy.deepcopy(template).requires_grad_(False)
        opt = torch.optim.AdamW(unet.parameters(), lr=config.lr)

        def step(unet=unet, ema=ema, opt=opt, config=config) -> object:  # noqa: ANN001
            return diffusion_step(unet, ema, opt, config, 1000, noisy, t, cond, noise)

        out[name] = (threads, step)
    return out, n


def measure(name: str, variants: dict, batch: int, args: argparse.Namespace) -> None:
    """Warm every variant up, time them in alternating rounds, print images/s and ratios."""
    for label, (threads, fn) in variants.items():
        torch.set_num_threads(threads)
        start = time.perf_counter()
        for _ in range(args.warmup):
            fn()
        print(f"  warm-up {label}: {args.warmup} steps in {time.perf_counter() - start:.1f}s", flush=True)
    times: dict[str, list[float]] = {label: [] for label in variants}
    for _ in range(args.rounds):
        for label, (threads, fn) in variants.items():
            torch.set_num_threads(threads)
            for _ in range(args.steps):
                start = time.perf_counter()
                fn()
                times[label].append(time.perf_counter() - start)
    reference = statistics.median(times[next(iter(variants))])
    print(f"{name}: batch {batch}")
    for label, ts in times.items():
        median = statistics.median(ts)
        print(
            f"  {label:<24} {median * 1000:8.1f} ms/step  {batch / median:7.1f} images/s  "
            f"x{reference / median:.2f}  (min {min(ts) * 1000:.0f}, max {max(ts) * 1000:.0f}, n={len(ts)})",
            flush=True,
        )


def check_images(count: int) -> None:
    """The shipped DF-GAN's answer-key pictures in float32 and under bf16 autocast, read back."""
    from training.data.scenes import answer_key, scene_scores
    from training.dfgan.checkpoint import load_generator
    from training.images import to_pil
    from training.shipped import default_dfgan_checkpoint

    loaded = load_generator(default_dfgan_checkpoint(None), "cpu")
    captions = [c for _, c in answer_key(count)]
    seeds = [12345 + i for i in range(count)]
    torch.set_num_threads(1)
    with torch.inference_mode():
        # the text encoder stays float32: only the generator runs under autocast
        sentences = loaded.embed(captions)
        full = loaded.draw(captions, seeds, sentences)
        with torch.autocast("cpu", torch.bfloat16):
            half = loaded.draw(captions, seeds, sentences)
    full, half = to_pil(full), to_pil(half)
    a = torch.from_numpy(np.stack([np.asarray(i) for i in full])).float()
    b = torch.from_numpy(np.stack([np.asarray(i) for i in half])).float()
    diff = (a - b).abs()
    print(f"shipped DF-GAN, {count} answer-key captions, float32 vs bf16 autocast inference:")
    print(f"  mean |pixel difference| {float(diff.mean()):.2f} of 255, max {float(diff.max()):.0f}")
    for label, images in (("float32", full), ("bf16", half)):
        scores = scene_scores(images, captions)
        print(f"  {label:<8} single all {scores['single_all']:.3f}  pair all {scores['pair_all']:.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", choices=["dfgan", "diffusion", "both"], default="both")
    parser.add_argument("--nf", type=int, default=16, help="DF-GAN ngf = ndf (the shipped recipe: 16)")
    parser.add_argument("--dfgan-batch", type=int, default=16)
    parser.add_argument("--diffusion-batch", type=int, default=32)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--steps", type=int, default=3, help="timed steps per variant per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--compile", action="store_true", help="also time DF-GAN with a compiled generator")
    parser.add_argument("--images", type=int, default=0, help="also compare N answer-key pictures fp32/bf16")
    args = parser.parse_args()
    print(
        f"torch {torch.__version__}, CPU native bf16: {cpu_has_native_bf16()}, "
        f"capability {torch.backends.cpu.get_cpu_capability()}"
    )
    if args.model in ("dfgan", "both"):
        measure(f"DF-GAN train step (64 px, ngf = ndf = {args.nf})", *dfgan_variants(args), args)
    if args.model in ("diffusion", "both"):
        measure("diffusion train step (32 px UNet, 4.3 M parameters)", *diffusion_variants(args), args)
    if args.images:
        check_images(args.images)


if __name__ == "__main__":
    main()
