"""Prometheus metrics move with real jobs: scraped over HTTP from the web chat and from a real worker
process (its own Redis, its own metrics port), before and after jobs run through the real queue."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from core.embedded_redis import EmbeddedRedis, free_port
from core.job_client import QueueClient
from core.jobs import Conversation, JobRequest
from core.settings import Settings
from tests.helpers.fake_telegram import FakeTelegram, user_message
from tests.helpers.processes import settings_env
from tests.helpers.settings import make_settings
from tests.helpers.waiting import eventually
from tests.helpers.web_api import imagine, wait_for_job

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
        yield {"settings": settings, "web": web.url, "fake": fake, "logs": tmp_path_factory.mktemp("logs")}
        web.stop()
    fake.stop()


def queue_and_cancel_one(web: str, cid: str) -> None:
    """A job queued before any worker runs (so the cancel is certain to find it waiting) shows in the
    queue depth, then is cancelled."""
    doomed = imagine(web, cid, "/imagine a red circle --engine dfgan").json()["job"]["id"]
    waiting = scrape(f"{web}/metrics")
    assert value(waiting, "imaginebot_queue_depth", queue="pending") >= 1
    assert value(waiting, "imaginebot_queue_depth", queue="gpu") >= 1
    cancel = requests.post(f"{web}/api/jobs/{doomed}/cancel", json={"conversation_id": cid}, timeout=10)
    assert cancel.status_code == 200


def submit_telegram_jobs(settings: Settings, fake: FakeTelegram) -> list[str]:
    """One job for each of two Telegram chats: the first one's first post is answered 429 (a retry),
    the other chat has blocked the bot (a failure)."""
    client = QueueClient(settings)
    limited = {"ok": False, "error_code": 429, "description": "Too Many Requests: retry after 1",
               "parameters": {"retry_after": 1}}  # fmt: skip
    blocked = {"ok": False, "error_code": 403, "description": "Forbidden: bot was blocked by the user"}
    for method in ("sendPhoto", "sendMediaGroup", "sendMessage"):
        fake.fail_next(method, 429, limited, chat_id=4201)
        for _ in range(3):
            fake.fail_next(method, 403, blocked, chat_id=4202)
    ids = []
    for chat in (4201, 4202):
        request = JobRequest(
            prompt="a yellow star",
            engines=["dfgan"],
            user=f"telegram:{chat}",
            conversation=Conversation(platform="telegram", chat_id=str(chat)),
        )
        ids.append(client.submit(request).id)
    return ids


def assert_grew(before: dict, after: dict, name: str, by: int, **labels: str) -> None:
    """Counter ``name`` with ``labels`` is exactly ``by`` higher in ``after`` than in ``before``."""
    assert value(after, name, **labels) == value(before, name, **labels) + by, (name, labels)


def run_worker_until_settled(settings: Settings, web: str, jobs: list[str], worker_log: Path) -> dict:
    """A fresh worker process (JSON logs to ``worker_log``) draws ``jobs`` and the Telegram jobs
    until a retry, a failure and a delivery are counted; its metrics then."""
    worker = subprocess.Popen(
        [sys.executable, "-m", "worker.cli", "worker", "--queues", "gpu,delivery", "--loglevel", "INFO"],
        env=_env(settings, IMAGINEBOT_LOG_FORMAT="json"),
        stdout=subprocess.DEVNULL,
        stderr=worker_log.open("wb"),
    )
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

        return eventually(telegram_settled, timeout_s=240)
    finally:
        worker.terminate()
        worker.wait(timeout=60)


def assert_worker_counted_exactly_these_jobs(after: dict) -> None:
    """A fresh worker process: its counters are exactly what the test's jobs did."""
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


def test_counters_latencies_and_queue_depth_move_with_real_jobs(stack: dict) -> None:
    settings: Settings = stack["settings"]
    web = stack["web"]
    fake: FakeTelegram = stack["fake"]
    before = scrape(f"{web}/metrics")
    cid = "metrics-" + uuid.uuid4().hex[:10]
    queue_and_cancel_one(web, cid)
    jobs = [
        imagine(web, cid, "/imagine a blue square --engine dfgan --seed 1").json()["job"]["id"],
        imagine(web, cid, "/imagine a green triangle --engine dfgan --seed 2").json()["job"]["id"],
        imagine(web, cid, "/imagine a red circle --seed 3 --steps 2").json()["job"]["id"],  # both engines
    ]
    submit_telegram_jobs(settings, fake)

    submitted = scrape(f"{web}/metrics")  # this process is the front-end: submits and cancels count here
    assert_grew(before, submitted, "imaginebot_jobs_submitted_total", 4, engine="dfgan", platform="web")
    assert_grew(before, submitted, "imaginebot_jobs_submitted_total", 1, engine="diffusion", platform="web")
    assert_grew(before, submitted, "imaginebot_jobs_submitted_total", 2, engine="dfgan", platform="telegram")
    assert_grew(before, submitted, "imaginebot_jobs_cancelled_total", 1, engine="dfgan", platform="web")

    worker_log = stack["logs"] / "worker.jsonl"
    after = run_worker_until_settled(settings, web, jobs, worker_log)
    assert_worker_counted_exactly_these_jobs(after)
    assert fake.find(lambda c: c.params.get("chat_id") in (4201, "4201") and c.ok)

    # JSON logs: every line an object; the lines about a job carry its id; no token anywhere.
    lines = [json.loads(line) for line in worker_log.read_text().splitlines() if line.strip()]
    assert lines and all({"ts", "level", "logger", "message"} <= set(line) for line in lines)
    assert {line.get("job_id") for line in lines} >= set(jobs)
    assert TOKEN not in worker_log.read_text()


def test_a_bot_process_serves_metrics_and_logs_json(stack: dict) -> None:
    settings: Settings = stack["settings"]
    fake: FakeTelegram = stack["fake"]
    port = free_port()
    log_file = stack["logs"] / "telegram.jsonl"
    bot = subprocess.Popen(
        [sys.executable, "-m", "worker.cli", "telegram"],
        env=_env(settings, IMAGINEBOT_METRICS_PORT=str(port), IMAGINEBOT_LOG_FORMAT="json"),
        stdout=subprocess.DEVNULL,
        stderr=log_file.open("wb"),
    )
    try:
        url = f"http://127.0.0.1:{port}"
        eventually(lambda: _answers(f"{url}/healthz"), 120)
        fake.push_update(user_message(4300, 4300, "/imagine a red circle --engine dfgan", 1))
        samples = eventually(
            lambda: (
                (now := scrape(f"{url}/metrics"))
                and value(now, "imaginebot_jobs_submitted_total", engine="dfgan", platform="telegram") == 1
                and now
            ),
            120,
        )
        assert value(samples, "imaginebot_queue_depth", queue="pending") >= 1
    finally:
        bot.terminate()
        bot.wait(timeout=60)
    text = log_file.read_text()
    lines = [json.loads(line) for line in text.splitlines() if line.strip()]
    assert lines and all(line["message"] is not None for line in lines)
    assert TOKEN not in text and TOKEN.split(":")[1] not in text


def test_json_lines_carry_the_bound_job_id_and_no_secret(settings: Settings) -> None:
    import io
    import logging

    from core import logging_setup

    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging_setup.JsonFormatter("test"))
    logger = logging.getLogger("imaginebot.test.json")
    logger.addHandler(handler)
    logger.propagate = False
    logger.setLevel(logging.INFO)  # the session's Celery worker sets the root logger to ERROR
    try:
        logging_setup.setup_logging(settings.model_copy(update={"web_access_password": "pw-SECRET-123"}), "t")
        logging_setup.bind(job_id="0123456789abcdef")
        logger.warning("drawing, password %s", "pw-SECRET-123")
        logging_setup.clear()
        logger.warning("idle", extra={"run_id": "fedcba9876543210"})
    finally:
        logger.removeHandler(handler)
    first, second = (json.loads(line) for line in stream.getvalue().splitlines())
    assert first["job_id"] == "0123456789abcdef" and "pw-SECRET-123" not in first["message"]
    assert "job_id" not in second and second["run_id"] == "fedcba9876543210"


def _answers(url: str) -> bool:
    try:
        return requests.get(url, timeout=2).status_code == 200
    except requests.RequestException:
        return False


def _env(settings: Settings, **extra: str) -> dict[str, str]:
    """Exactly ``settings`` (none of this process's own ``IMAGINEBOT_*``), then ``extra``."""
    own = {k: v for k, v in os.environ.items() if not k.startswith("IMAGINEBOT_")}
    return settings_env(settings, own, **extra)


def test_a_busy_metrics_port_is_reported_and_not_fatal(caplog: pytest.LogCaptureFixture) -> None:
    import socket

    from core.metrics import serve_metrics

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with caplog.at_level("ERROR", logger="core.metrics"):
            assert serve_metrics(port, host="127.0.0.1") is None
    assert f"cannot listen on 127.0.0.1:{port}" in caplog.text
    server = serve_metrics(0, host="127.0.0.1")
    assert server is not None
    try:
        assert (
            "imaginebot_jobs_submitted"
            in requests.get(f"http://127.0.0.1:{server.port}/metrics", timeout=10).text
        )
    finally:
        server.stop()


def test_prompts_the_queue_refuses_are_counted_by_reason(stack: dict) -> None:
    from core.errors import InputError

    settings: Settings = stack["settings"].model_copy(update={"max_queue_depth": 0})
    client = QueueClient(settings)
    request = JobRequest(
        prompt="a red circle",
        engines=["dfgan"],
        user="cli:full",
        conversation=Conversation(platform="cli", chat_id="cli"),
    )
    before = value(scrape(f"{stack['web']}/metrics"), "imaginebot_jobs_rejected_total", reason="queue_full")
    with pytest.raises(InputError) as refused:
        client.submit(request)
    assert refused.value.code == "queue_full"
    after = value(scrape(f"{stack['web']}/metrics"), "imaginebot_jobs_rejected_total", reason="queue_full")
    assert after == before + 1
