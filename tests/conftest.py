"""Shared fixtures: a real Redis (the newest redis-server at hand), a real in-process Celery worker,
the web chat.

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

from core.embedded_redis import EmbeddedRedis
from core.settings import Settings
from tests.helpers.redis_revival import revive_if_dead
from tests.helpers.settings import make_settings

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


#: Fixtures that start the session's Celery worker (and so load both engines) or the web chat on it.
SLOW_FIXTURES = frozenset({"celery_worker", "web_server"})
#: Modules whose tests start processes, a browser, training runs or network namespaces on their own.
SLOW_MODULES = frozenset(
    {
        "test_cli",
        "test_supervisor",
        "test_scale_out_netns",
        "test_web_browser",
        "test_worker_gpus",
        "test_queue_durability",
        "test_retrain",
        "test_dfgan_training",
        "test_diffusion_training",
        "test_secrets_in_logs",
        "test_faults_processes",
        "test_faults_delivery",
        "test_faults_redis_down",
        "test_faults_fuzz_platforms",
        "test_faults_generate",
        "test_metrics",
        "test_dfgan_speed",
    }
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark ``slow`` every test that needs a worker, a browser, processes or training, so that
    ``pytest -m "not slow"`` is the quick subset for inner loops (the full suite stays the default)."""
    for item in items:
        module = item.path.stem
        if module in SLOW_MODULES or SLOW_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One data dir for the session, so the placeholder diffusion model is built once."""
    return tmp_path_factory.mktemp("data")


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedRedis]:
    """A real redis-server on a free port for the whole session."""
    with EmbeddedRedis(tmp_path_factory.mktemp("redis"), persist=False) as server:
        yield server


#: Crash reports of the session's redis-server, shown at the end of the run (see revive_redis).
REDIS_CRASHES: list[str] = []


@pytest.fixture(autouse=True)
def revive_redis(request: pytest.FixtureRequest) -> None:
    """If the session's redis-server has died (a server bug, not a test's doing: see
    docs/reliability.md), keep its log, say so, and start it again on the same port, so one crash
    fails the test it happened in rather than every test after it."""
    if "redis_server" in request.fixturenames:
        report = revive_if_dead(request.getfixturevalue("redis_server"), request.node.nodeid)
        if report:
            REDIS_CRASHES.append(report)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """List the redis-server crashes the run recovered from (each one failed the test it hit)."""
    if REDIS_CRASHES:
        terminalreporter.section("redis-server crashed and was restarted")
        for crash in REDIS_CRASHES:
            terminalreporter.write_line(crash)


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
    from tests.helpers.celery_worker import in_thread_worker

    with in_thread_worker(celery_app) as worker:
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
