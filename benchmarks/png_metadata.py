"""What the PNG metadata chunks and the grid layout cost a stored picture (issue #15).

Times, interleaved in one run (medians): ``to_png`` of a picture and of a paired image without and with
the ``parameters`` + ``imaginebot`` chunks (:mod:`core.png_metadata`), ``read_parameters``, and
``compose_pair`` for ``--n 1`` and ``--n 4`` (a 2×2 grid per engine), square and ``--ar 16:9``.

    .venv/bin/python benchmarks/png_metadata.py --repeat 30
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import numpy as np
from PIL import Image

from core.aspect import dimensions
from core.compose import Panel, compose_pair, to_png
from core.jobs import Conversation, EngineResult, JobRecord, JobRequest
from core.png_metadata import pair_parameters, picture_parameters, read_parameters


def _median_ms(fn: Callable[[], object], repeat: int) -> float:
    return _paired_ms(fn, fn, repeat)[0]


def _paired_ms(a: Callable[[], object], b: Callable[[], object], repeat: int) -> tuple[float, float]:
    """Medians of ``a`` and ``b``, run alternately (a busy machine then slows both alike)."""
    a(), b()
    times: tuple[list[float], list[float]] = ([], [])
    for _ in range(repeat):
        for fn, out in ((a, times[0]), (b, times[1])):
            start = time.perf_counter()
            fn()
            out.append(time.perf_counter() - start)
    return statistics.median(times[0]) * 1e3, statistics.median(times[1]) * 1e3


def _record(aspect: str | None, count: int) -> JobRecord:
    request = JobRequest(
        prompt="a red circle above a blue square",
        negative_prompt="blurry",
        aspect=aspect,
        count=count,
        user="bench",
        conversation=Conversation(platform="cli", chat_id="bench"),
    )
    return JobRecord(request=request, seed=42, steps=20, size=64)


def main() -> None:
    """Print one table row per measurement."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=30)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    result = EngineResult(engine="diffusion", version="diffusion-v1", seconds=1.0, image_keys=[])
    print("| what | without chunks (ms) | with chunks (ms) |")
    print("|---|---|---|")
    for aspect in (None, "16:9"):
        for count in (1, 4):
            record = _record(aspect, count)
            width, height = dimensions(64, aspect)
            pics = [
                Image.fromarray(rng.integers(0, 255, (height, width, 3), dtype=np.uint8))
                for _ in range(count)
            ]
            panels = [Panel("dfgan", "dfgan-v1", 0.01, pics), Panel("diffusion", "diffusion-v1", 1.0, pics)]
            pair = compose_pair(panels, record.request.prompt, record.seed)
            shape = f"{aspect or '1:1'}, --n {count}"
            meta = picture_parameters(record, result, 0, pics[0])
            plain_ms, meta_ms = _paired_ms(
                lambda p=pics[0]: to_png(p), lambda p=pics[0], m=meta: to_png(p, m), args.repeat
            )
            print(f"| to_png picture {width}×{height} | {plain_ms:.3f} | {meta_ms:.3f} |")
            pair_meta = pair_parameters(record, [result])
            plain_ms, meta_ms = _paired_ms(
                lambda p=pair: to_png(p), lambda p=pair, m=pair_meta: to_png(p, m), args.repeat
            )
            print(f"| to_png pair {pair.width}×{pair.height} ({shape}) | {plain_ms:.1f} | {meta_ms:.1f} |")
            compose_ms = _median_ms(
                lambda p=panels, r=record: compose_pair(p, r.request.prompt, 1), args.repeat
            )
            print(f"| compose_pair ({shape}) | {compose_ms:.1f} | |")
    png = to_png(pics[0], picture_parameters(_record("16:9", 4), result, 0, pics[0]))
    print(f"| read_parameters | | {_median_ms(lambda: read_parameters(png), args.repeat):.3f} |")


if __name__ == "__main__":
    main()
