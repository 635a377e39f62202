"""Diffusion engine: images/s at batch 1 vs 4 / 8, and our engine's overhead over a bare pipeline call.

Run by hand (numbers go to docs/benchmarks.md)::

    .venv/bin/python benchmarks/diffusion_batching.py                 # the shipped model
    .venv/bin/python benchmarks/diffusion_batching.py --model DIR --steps 20 --size 64 --repeats 5

For each batch size B the engine draws B one-image requests (as B chat jobs batched by the worker),
and the bare pipeline is called once with the same B prompts, seeds and settings: the same work
without our request grouping, per-image generators' bookkeeping, progress callback and result
splitting. Engine and bare calls alternate, so machine load affects both alike; medians are reported.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

from worker.engines.base import GenerationRequest
from worker.engines.diffusion import DiffusionEngine


def main() -> None:
    """Parse arguments, run the measurements and print one table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=None, help="Diffusers folder (default: the shipped model).")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--guidance", type=float, default=2.0)
    parser.add_argument("--batches", default="1,4,8", help="Comma-separated batch sizes.")
    parser.add_argument("--repeats", type=int, default=5, help="Timed calls per batch size and side.")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (0 = torch's default).")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    if args.threads > 0:
        torch.set_num_threads(args.threads)

    engine = DiffusionEngine(args.model, Path("data"), device=args.device)
    pipe = engine.pipe
    side = engine.image_size(args.size)
    print(
        f"model {engine.info.version} ({engine.info.extra['pipeline']}) on {engine.device}, "
        f"{args.steps} steps, {side}x{side}, guidance {args.guidance}, threads {torch.get_num_threads()}"
    )

    def engine_call(batch: int) -> None:
        requests = [
            GenerationRequest(f"a small red circle number {i}", [i], args.steps, side, None, args.guidance)
            for i in range(batch)
        ]
        engine.generate(requests, progress=lambda step, total: False)

    def bare_call(batch: int) -> None:
        with torch.inference_mode():
            pipe(
                [f"a small red circle number {i}" for i in range(batch)],
                num_inference_steps=args.steps,
                guidance_scale=args.guidance,
                height=side,
                width=side,
                generator=[torch.Generator("cpu").manual_seed(i) for i in range(batch)],
            )

    rows = []
    for batch in [int(b) for b in args.batches.split(",")]:
        engine_call(batch), bare_call(batch)  # warm-up: allocator, kernels, the text encoder's cache
        ours, bare = [], []
        for _ in range(args.repeats):
            for fn, times in ((engine_call, ours), (bare_call, bare)):
                started = time.perf_counter()
                fn(batch)
                times.append(time.perf_counter() - started)
        rows.append((batch, statistics.median(ours), statistics.median(bare)))

    base_rate = 1 / rows[0][1] * rows[0][0]
    print(f"{'batch':>5} {'engine s':>9} {'bare s':>8} {'overhead':>9} {'images/s':>9} {'vs batch 1':>10}")
    for batch, ours, bare in rows:
        rate = batch / ours
        print(
            f"{batch:>5} {ours:>9.3f} {bare:>8.3f} {100 * (ours / bare - 1):>8.1f}% {rate:>9.2f} "
            f"{rate / base_rate:>9.2f}x"
        )


if __name__ == "__main__":
    main()
