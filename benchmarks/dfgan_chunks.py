"""DF-GAN engine on a CPU: a worker's batch drawn in one forward pass, or in passes of a few images.

The worker batches up to 8 waiting jobs; on a GPU one pass is fastest, on a CPU the activations of
8 pictures can outgrow a core's cache. This times ``DFGANEngine.generate`` on batches of ``--batch``
one-seed requests (the worker's shape) for each pass size in ``--chunks`` (0: the whole batch in one
pass) and for single requests, alternating in rounds so background load hits them alike, and prints
ms per picture and the speed against one pass. Run by hand; the figures go to ``docs/benchmarks.md``::

    .venv/bin/python benchmarks/dfgan_chunks.py [--batch 8] [--chunks 0,2,4,6] [--rounds 5]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from worker.engines.base import GenerationRequest  # noqa: E402
from worker.engines.dfgan import DFGANEngine, resolve_default_checkpoint  # noqa: E402

PROMPTS = ("a red circle", "a blue square", "a green triangle on the left", "a small yellow star")


def per_picture_ms(engine: DFGANEngine, requests: list[GenerationRequest], batch: int) -> float:
    """Draw ``requests`` in batches of ``batch``; wall ms per picture."""
    t0 = time.perf_counter()
    for i in range(0, len(requests), batch):
        engine.generate(requests[i : i + batch])
    return (time.perf_counter() - t0) / len(requests) * 1000


def main(argv: list[str] | None = None) -> int:
    """Measure and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=8, help="requests per engine call (the worker's 8)")
    parser.add_argument("--chunks", default="0,2,4,6", help="pass sizes to time (0: whole batch)")
    parser.add_argument("--pictures", type=int, default=240, help="pictures per variant per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--checkpoint", default=None, help="DF-GAN folder (default: the shipped one)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    engine = DFGANEngine(str(resolve_default_checkpoint(args.checkpoint)), "cpu")
    requests = [GenerationRequest(PROMPTS[i % 4], [1000 + i], 20, 64) for i in range(args.pictures)]
    chunks = [int(c) for c in args.chunks.split(",")]
    variants: list[tuple[str, int, int]] = [("single requests", 0, 1)]
    variants += [
        (f"batch {args.batch}, " + (f"passes of {c}" if c else "one pass"), c, args.batch) for c in chunks
    ]
    for _, chunk, batch in variants:  # warm-up: every tensor shape once
        engine.chunk = chunk
        per_picture_ms(engine, requests[: 3 * batch], batch)
    times: dict[str, list[float]] = {name: [] for name, _, _ in variants}
    for r in range(args.rounds):
        for name, chunk, batch in variants:
            engine.chunk = chunk
            times[name].append(per_picture_ms(engine, requests, batch))
        print(f"\r  round {r + 1}/{args.rounds}", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    one_pass = statistics.median(times[variants[1][0]]) if 0 in chunks else float("nan")
    print(f"DF-GAN engine, CPU, {args.threads} thread(s), {engine.info.version}, {args.rounds} rounds")
    print(f"{'variant':32} {'ms/picture (median)':>20} {'min..max':>14} {'vs one pass':>12}")
    for name, values in times.items():
        med = statistics.median(values)
        print(f"{name:32} {med:20.2f} {min(values):6.2f}..{max(values):<6.2f} {one_pass / med:11.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
