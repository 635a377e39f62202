"""What a live preview costs a diffusion run, next to what a denoising step costs.

For each model (the shipped pixel-space model, the tiny latent Stable Diffusion pipeline) the engine's own
``generate`` runs with the worker's preview machinery (``EngineProgress``); the benchmark records the
time between steps (median: one denoising step) and keeps the estimate the engine offered at the last
step. Then it times making and storing a preview from that estimate, as the worker does
(``LivePreviews.keys_at``: the projection, the PNG, a SET into a real embedded Redis), many times.
Both medians come from the same process and run, so their ratio is what to read; on a busy machine
whole-run times swing too much to compare runs with and without previews directly.

    .venv/bin/python benchmarks/previews.py                  # both models, 64 px, 20 steps
    .venv/bin/python benchmarks/previews.py --size 256 --seeds 4
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import redis
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from core.embedded_redis import EmbeddedRedis  # noqa: E402
from training.diffusion.tiny import build_tiny_pipeline  # noqa: E402
from worker.engines.base import GenerationRequest, PreviewSource  # noqa: E402
from worker.engines.diffusion import DiffusionEngine  # noqa: E402
from worker.previews import EngineProgress, LivePreviews, steps_between  # noqa: E402


def step_times(
    engine: DiffusionEngine, request: GenerationRequest, client: redis.Redis
) -> tuple[float, PreviewSource]:
    """(median seconds between two steps, the last preview the engine offered)."""
    stamps: list[float] = []
    previews = LivePreviews(client, ["bench"], -1)  # takes offers, never makes one
    progress = EngineProgress(lambda step, total: stamps.append(time.perf_counter()) or False, previews)
    engine.generate([request], progress)
    assert previews.offered is not None, "the engine offered no preview"
    gaps = [b - a for a, b in zip(stamps, stamps[1:], strict=False)]
    return statistics.median(gaps), previews.offered


def preview_time(source: PreviewSource, client: redis.Redis, repeats: int) -> tuple[float, int]:
    """(median seconds to make and store one preview, its PNG bytes)."""
    times = []
    previews = LivePreviews(client, ["bench"], 1)
    for step in range(1, repeats + 1):
        previews.offer(source)
        started = time.perf_counter()
        keys = previews.keys_at(step, repeats)
        times.append(time.perf_counter() - started)
    return statistics.median(times), len(client.get(keys["bench"]) or b"")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--seeds", type=int, default=1, help="pictures per job (a grid preview)")
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    work = Path(tempfile.mkdtemp(prefix="previews-bench-"))
    with EmbeddedRedis(work / "redis", persist=False) as server:
        client = redis.Redis.from_url(server.url)
        models = {"pixel (shipped)": None, "latent SD (tiny)": str(build_tiny_pipeline(work / "tiny"))}
        request = GenerationRequest("a red circle", list(range(args.seeds)), args.steps, args.size)
        every = steps_between(0, args.steps) or 1
        print(f"{args.steps} steps, {args.size} px, {args.seeds} picture(s), {args.threads} thread(s)")
        for label, model in models.items():
            engine = DiffusionEngine(model, work, device="cpu")
            engine.generate([request])  # warm-up
            step, source = step_times(engine, request, client)
            preview, size = preview_time(source, client, args.repeats)
            print(
                f"  {label:17s} step {step * 1000:7.2f} ms  preview {preview * 1000:6.2f} ms ({size} B PNG)"
                f" = {preview / step:.2f} steps; default (every {every} steps): +{preview / step / every:.1%}"
            )


if __name__ == "__main__":
    main()
