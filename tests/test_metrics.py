"""Prometheus metrics move with real jobs: scraped over HTTP from the web chat and from a real worker
process (its own Redis, its own metrics port), before and after jobs run through the real queue."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from core.embedded_redis import EmbeddedRedis, free_port
from core.jobs import Conversation, JobRequest
from core.queue import QueueClient
from core.settings import Settings
from tests.conftest import imagine, make_settings, wait_for_job, worker_subprocess
from tests.fake_telegram import FakeTelegram

TOKEN = "123456:METRICS-test-token"


def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """``{(sample name, sorted labels): value}`` from a Prometheus text endpoint."""
    text = requests.get(url, timeout=10).text
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def value(samples: dict, name: str, **labels: str) -> float:
    """One sample's value (0 when absent: a counter not yet touched)."""
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def eventually(check, timeout_s: float = 120.0):  # noqa: ANN001, ANN201
    """Poll ``check()`` until it returns a truthy value; fail with its last value."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = check()
        if result or time.monotonic() > deadline:
            assert result, f"condition not met within {timeout_s} s"
            return result
        time.sleep(0.2)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> Iterator[dict]:
    """Own Redis, the web chat in this process, a fake Telegram; the worker is started by the test."""
    from bots.web.server import WebServer

    fake = FakeTelegram(TOKEN).start()
    with EmbeddedRedis(tmp_path_factory.mktemp("metrics-redis"), persist=False) as server:
        settings = make_settings(
            server.url,
            data_dir,
            metrics_port=free_port(),
            telegram_token=TOKEN,
            telegram_api_base=fake.url,
        )
        web = WebServer(settings, host="127.0.0.1", port=0).start()
        yield {"settings": settings, "web": web.url, "fake": fake}
        web.stop()
    fake.stop()


def test_counters_latencies_and_queue_depth_move_with_real_jobs(stack: dict) -> None:
    settings: Settings = stack["settings"]
    web = stack["web"]
    fake: FakeTelegram = stack["fake"]
    before = scrape(f"{web}/metrics")

    # Queued before any worker runs, so the cancel is certain to find it waiting.
    cid = "metrics-" + uuid.uuid4().hex[:10]
    doomed = imagine(web, cid, "/imagine a red circle --engine dfgan").json()["job"]["id"]
    waiting = scrape(f"{web}/metrics")
    assert value(waiting, "imaginebot_queue_depth", queue="pending") >= 1
    assert value(waiting, "imaginebot_queue_depth", queue="gpu") >= 1
    cancel = requests.post(f"{web}/api/jobs/{doomed}/cancel", json={"conversation_id": cid}, timeout=10)
    assert cancel.status_code == 200

    jobs = [
        imagine(web, cid, "/imagine a blue square --engine dfgan --seed 1").json()["job"]["id"],
        imagine(web, cid, "/imagine a green triangle --engine dfgan --seed 2").json()["job"]["id"],
        imagine(web, cid, "/imagine a red circle --seed 3 --steps 2").json()["job"]["id"],  # both engines
    ]
    # Telegram: the first post is answered 429 (a retry), another chat has blocked the bot (a failure).
    client = QueueClient(settings)
    limited = {"ok": False, "error_code": 429, "description": "Too Many Requests: retry after 1",
               "parameters": {"retry_after": 1}}  # fmt: skip
    blocked = {"ok": False, "error_code": 403, "description": "Forbidden: bot was blocked by the user"}
    for method in ("sendPhoto", "sendMediaGroup", "sendMessage"):
        fake.fail_next(method, 429, limited, chat_id=4201)
        for _ in range(3):
            fake.fail_next(method, 403, blocked, chat_id=4202)
    telegram_jobs = []
    for chat in (4201, 4202):
        request = JobRequest(
            prompt="a yellow star",
            engines=["dfgan"],
            user=f"telegram:{chat}",
            conversation=Conversation(platform="telegram", chat_id=str(chat)),
        )
        telegram_jobs.append(client.submit(request).id)

    submitted = scrape(f"{web}/metrics")  # this process is the front-end: submits and cancels count here
    assert value(submitted, "imaginebot_jobs_submitted_total", engine="dfgan", platform="web") == (
        value(before, "imaginebot_jobs_submitted_total", engine="dfgan", platform="web") + 4
    )
    assert value(submitted, "imaginebot_jobs_submitted_total", engine="diffusion", platform="web") == (
        value(before, "imaginebot_jobs_submitted_total", engine="diffusion", platform="web") + 1
    )
    assert value(submitted, "imaginebot_jobs_submitted_total", engine="dfgan", platform="telegram") == (
        value(before, "imaginebot_jobs_submitted_total", engine="dfgan", platform="telegram") + 2
    )
    assert value(submitted, "imaginebot_jobs_cancelled_total", engine="dfgan", platform="web") == (
        value(before, "imaginebot_jobs_cancelled_total", engine="dfgan", platform="web") + 1
    )

    worker = worker_subprocess(settings, "gpu,delivery")
    try:
        for job_id in jobs:
            assert wait_for_job(web, job_id, timeout_s=240)["status"] == "done"
        metrics_url = f"http://127.0.0.1:{settings.metrics_port}/metrics"
        assert requests.get(f"http://127.0.0.1:{settings.metrics_port}/healthz", timeout=10).text == "ok\n"

        def telegram_settled() -> dict | None:
            now = scrape(metrics_url)
            retried = value(now, "imaginebot_delivery_retries_total", platform="telegram") >= 1
            failed = value(now, "imaginebot_delivery_failures_total", platform="telegram") >= 1
            delivered = value(now, "imaginebot_delivery_seconds_count", platform="telegram") >= 1
            return now if retried and failed and delivered else None

        after = eventually(telegram_settled, timeout_s=240)
    finally:
        worker.terminate()
        worker.wait(timeout=60)

    # A fresh worker process: its counters are exactly what these jobs did.
    assert value(after, "imaginebot_jobs_finished_total", engine="dfgan", platform="web") == 3
    assert value(after, "imaginebot_jobs_finished_total", engine="diffusion", platform="web") == 1
    assert value(after, "imaginebot_jobs_finished_total", engine="dfgan", platform="telegram") == 2
    assert value(after, "imaginebot_jobs_failed_total", engine="dfgan", platform="web") == 0
    assert value(after, "imaginebot_job_wait_seconds_count") == 5
    assert value(after, "imaginebot_engine_seconds_count", engine="dfgan") >= 1
    assert value(after, "imaginebot_engine_seconds_count", engine="diffusion") >= 1
    assert value(after, "imaginebot_engine_seconds_sum", engine="diffusion") > 0
    assert value(after, "imaginebot_batch_size_sum") == 5  # every job drawn once, in whatever batches
    assert value(after, "imaginebot_delivery_seconds_count", platform="web") == 3  # delivered inline
    assert value(after, "imaginebot_task_seconds_count", task="imaginebot.generate", outcome="SUCCESS") >= 1
    assert value(after, "imaginebot_queue_depth", queue="gpu") == 0
    assert value(after, "imaginebot_queue_depth", queue="pending") == 0
    assert fake.find(lambda c: c.params.get("chat_id") in (4201, "4201") and c.ok)
