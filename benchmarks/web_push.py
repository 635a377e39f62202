"""Web chat push benchmark: from "stored" to "shown in the browser", polling vs Server-Sent Events.

Run by hand (numbers go to ``docs/benchmarks.md``)::

    .venv/bin/python benchmarks/web_push.py [--jobs 12] [--engine dfgan]

It starts its own embedded Redis (temporary), a real Celery worker in this process (solo pool), the
web chat (waitress) and headless Chromium (Debian's ``/usr/bin/chromium`` with the tests' flags),
then sends the same prompts, one job at a time, alternately from two pages of the chat: one that
polls (``/?push=off``, the page as it was) and one that listens to
``/api/conversations/<id>/events``. For every job it takes

- **stored**: the worker's done write (the record's ``finished_at``, after the PNGs are stored),
- **delivered**: the web delivery marked the job delivered (``delivered_at``; both pages wait for
  the delivery, so this hop is common to both),
- **in the page**: the result ``<img>`` entered the page (``Date.now()`` in the page: same machine,
  same clock),
- **shown**: that image finished loading,

and prints p50 / p90 / mean of shown - stored per mode and the ratio of the two medians.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(REPO))

from core.embedded_redis import EmbeddedRedis  # noqa: E402
from core.job_client import QueueClient  # noqa: E402
from core.settings import Settings  # noqa: E402
from tests.helpers.browser import CHROMIUM, CHROMIUM_ARGS  # noqa: E402
from tests.helpers.celery_worker import in_thread_worker  # noqa: E402

PROMPTS = ("a red circle", "a blue square", "a green triangle on the left", "a small yellow star")
MODES = {"polling": "?push=off", "push (SSE)": ""}
# When each job's result <img> enters the page and when it has loaded (ms since the epoch).
RECORD_SHOWN = """
window.__shown = {};
new MutationObserver(() => {
  for (const img of document.querySelectorAll('.job[data-job-id] .job-result img.pair')) {
    const id = img.closest('.job').dataset.jobId;
    if (window.__shown[id]) continue;
    const seen = window.__shown[id] = {inserted: Date.now(), loaded: null};
    const done = () => { if (!seen.loaded) seen.loaded = Date.now(); };
    if (img.complete && img.naturalWidth > 0) done(); else img.addEventListener('load', done);
  }
}).observe(document, {subtree: true, childList: true});
"""


def pct(values: list[float], q: float) -> float:
    """The ``q`` quantile (0..1) of ``values``, linear interpolation."""
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q
    lo, hi = int(pos), min(int(pos) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def one_job(page: Any, queue: QueueClient, text: str, timeout_s: float = 300.0) -> dict[str, float]:
    """Send ``text`` from ``page``; the job's times once its picture is shown (seconds since the epoch)."""
    before = page.locator(".job[data-job-id]").count()
    page.fill("#prompt", text)
    page.click("#send")
    job = page.locator(".job[data-job-id]").nth(before)
    job.wait_for(timeout=30_000)
    job_id = job.get_attribute("data-job-id")
    page.wait_for_function(
        "id => (window.__shown[id] || {}).loaded", arg=job_id, timeout=int(timeout_s * 1000), polling=50
    )
    shown = page.evaluate("id => window.__shown[id]", job_id)
    record = queue.jobs.get(job_id)
    assert record.finished_at is not None and record.delivered_at is not None, record
    return {
        "stored": record.finished_at,
        "delivered": record.delivered_at,
        "inserted": shown["inserted"] / 1000,
        "loaded": shown["loaded"] / 1000,
    }


def summary(name: str, runs: list[dict[str, float]]) -> dict[str, float]:
    """Print and return the figures of one mode (milliseconds)."""
    shown = [1000 * (r["loaded"] - r["stored"]) for r in runs]
    inserted = [1000 * (r["inserted"] - r["stored"]) for r in runs]
    hop = [1000 * (r["delivered"] - r["stored"]) for r in runs]
    after = [1000 * (r["loaded"] - r["delivered"]) for r in runs]
    row = {
        "p50": pct(shown, 0.5),
        "p90": pct(shown, 0.9),
        "mean": statistics.fmean(shown),
        "max": max(shown),
        "inserted_p50": pct(inserted, 0.5),
        "delivery_p50": pct(hop, 0.5),
        "after_delivery_p50": pct(after, 0.5),
    }
    print(
        f"{name:<12} n={len(runs):<3} stored->shown ms: p50 {row['p50']:7.0f}  p90 {row['p90']:7.0f}  "
        f"mean {row['mean']:7.0f}  max {row['max']:7.0f} | stored->in page p50 {row['inserted_p50']:6.0f} | "
        f"stored->delivered p50 {row['delivery_p50']:6.0f} | "
        f"delivered->shown p50 {row['after_delivery_p50']:6.0f}"
    )
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=12, help="jobs per mode")
    parser.add_argument("--engine", default="dfgan")
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    from bots.web.server import WebServer
    from worker.app import create_app

    with tempfile.TemporaryDirectory() as tmp, EmbeddedRedis(Path(tmp) / "redis", persist=False) as server:
        values: dict[str, Any] = {
            "redis_url": server.url,
            "data_dir": Path(tmp) / "data",
            "device": "cpu",
            "torch_threads": 1,
            "rate_limit_jobs": 10_000,
            "max_queue_depth": 10_000,
        }
        settings = Settings(_env_file=None, **values)  # type: ignore[call-arg]
        queue = QueueClient(settings)
        with in_thread_worker(create_app(settings)), sync_playwright() as p:
            web = WebServer(settings, host="127.0.0.1", port=0).start()
            browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
            pages = {}
            for name, query in MODES.items():
                page = browser.new_context().new_page()
                page.add_init_script(RECORD_SHOWN)
                page.goto(web.url + "/" + query)
                pages[name] = page
            one_job(pages["polling"], queue, f"warm-up --engine {args.engine}")  # loads the engine
            runs: dict[str, list[dict[str, float]]] = {name: [] for name in MODES}
            for i in range(args.jobs):
                for name, page in pages.items():  # alternate: both modes see the same load
                    text = f"{PROMPTS[i % len(PROMPTS)]} --engine {args.engine} --seed {i}"
                    runs[name].append(one_job(page, queue, text))
            browser.close()
            web.stop()
    print(f"web_push: {args.jobs} jobs per mode, engine {args.engine}, one job at a time")
    rows = {name: summary(name, found) for name, found in runs.items()}
    print(f"median stored->shown, polling / push: {rows['polling']['p50'] / rows['push (SSE)']['p50']:.1f}x")


if __name__ == "__main__":
    main()
