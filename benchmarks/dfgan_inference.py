"""DF-GAN generator throughput (images/s) at batch 1 and 16: plain eager against ours.

plain eager: the paper's unfused affine MLPs (``benchmarks/dfgan_train_step.plain_generator``),
contiguous NCHW tensors, ``torch.no_grad``. ours: ``NetG.forward`` (fused gamma/beta MLPs, cached
fused weights), channels-last, ``torch.inference_mode`` -- what ``worker/engines/dfgan.py`` runs.
Two sizes: the shipped checkpoint (64x64, ngf 16, its real weights) and ngf 32 (perturbed random
weights). Variants alternate in rounds so background load hits them alike.

    .venv/bin/python benchmarks/dfgan_inference.py            # 1 thread, CPU
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from dfgan_train_step import plain_generator  # noqa: E402

from training.dfgan.checkpoint import CONFIG_FILE, GENERATOR_FILE, build_generator  # noqa: E402
from training.dfgan.config import DFGANConfig  # noqa: E402
from training.dfgan.model import NetG  # noqa: E402
from worker.engines.dfgan import SHIPPED_CHECKPOINT  # noqa: E402


def generators(device: str) -> dict[str, tuple[DFGANConfig, NetG]]:
    """The shipped checkpoint (when present) and an ngf-32 generator with perturbed weights."""
    out = {}
    if (SHIPPED_CHECKPOINT / CONFIG_FILE).is_file():
        config = DFGANConfig.load(SHIPPED_CHECKPOINT / CONFIG_FILE)
        netG = build_generator(config)
        netG.load_state_dict(load_file(SHIPPED_CHECKPOINT / GENERATOR_FILE))
        out[f"shipped (ngf {config.ngf})"] = (config, netG)
    config = DFGANConfig(ngf=32, cond_scale=5.0)
    torch.manual_seed(0)
    netG = build_generator(config)
    with torch.no_grad():
        for p in netG.parameters():  # identity-initialised affines would skip the real arithmetic
            p.add_(torch.randn_like(p) * 0.05)
    out["ngf 32"] = (config, netG)
    return {
        name: (config, netG.to(device).eval().requires_grad_(False)) for name, (config, netG) in out.items()
    }


def measure(fn: Callable[[], object], seconds: float, device: str) -> list[float]:
    """Per-call wall times of ``fn`` for about ``seconds``."""
    times: list[float] = []
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline or len(times) < 3:
        start = time.perf_counter()
        fn()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--batches", default="1,16")
    parser.add_argument("--seconds", type=float, default=2.0, help="per variant per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(
        f"DF-GAN generator inference, 64x64, device {args.device}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} thread(s)"
    )
    for name, (config, netG) in generators(args.device).items():
        for batch in (int(b) for b in args.batches.split(",")):
            g = torch.Generator().manual_seed(batch)
            noise = torch.randn(batch, config.nz, generator=g).to(args.device)
            sent = F.normalize(torch.randn(batch, config.cond_dim, generator=g), dim=1).to(args.device)
            sent = sent * config.cond_scale

            nchw, nhwc = copy.deepcopy(netG), copy.deepcopy(netG).to(memory_format=torch.channels_last)

            def plain(netG: NetG = nchw, noise: torch.Tensor = noise, sent: torch.Tensor = sent) -> None:
                with torch.no_grad():
                    plain_generator(netG, noise, sent)

            def ours(netG: NetG = nhwc, noise: torch.Tensor = noise, sent: torch.Tensor = sent) -> None:
                with torch.inference_mode():
                    netG(noise, sent)

            variants = {"plain eager": plain, "ours": ours}
            times: dict[str, list[float]] = {v: [] for v in variants}
            for _ in range(args.rounds):
                for variant, fn in variants.items():
                    fn()  # warm-up: fused-weight cache, allocator
                    fn()
                    times[variant] += measure(fn, args.seconds, args.device)
            rate = {v: batch / statistics.median(t) for v, t in times.items()}
            print(
                f"  {name:<18} batch {batch:>2}: plain eager {rate['plain eager']:7.1f} images/s, "
                f"ours {rate['ours']:7.1f} images/s, x{rate['ours'] / rate['plain eager']:.2f} "
                f"(n={len(times['ours'])}/{len(times['plain eager'])} calls)"
            )


if __name__ == "__main__":
    main()
