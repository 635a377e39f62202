"""Prometheus metrics shared by every imaginebot process (web chat, bots, workers).

Each process exports its own counters; Prometheus adds them up across processes and machines.
The queue depths are read from Redis at scrape time, so any one process reports the whole queue.

Who feeds what:

- the queue client (``core.job_client``): jobs submitted and cancelled (front-end processes);
- Celery signals in :mod:`worker.metrics`: jobs finished and failed, latencies, batch sizes,
  delivery retries and failures, task durations (worker processes);
- :class:`QueueDepthCollector`: queue depths, at scrape time.

A job that names two engines counts once per engine in the ``engine``-labelled counters.
This module imports no torch and no chat library: bots use it too.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Iterator
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import redis
from prometheus_client import REGISTRY, Counter, Histogram, make_wsgi_app
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from core.store import PENDING_KEY
from core.task_contract import ALL_QUEUES

log = logging.getLogger(__name__)

#: Seconds: from tens of milliseconds (DF-GAN on a GPU) to minutes (SDXL on a CPU, a long queue).
LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800)

JOBS_SUBMITTED = Counter("imaginebot_jobs_submitted", "Jobs accepted into the queue.", ["engine", "platform"])
JOBS_FINISHED = Counter("imaginebot_jobs_finished", "Jobs drawn successfully.", ["engine", "platform"])
JOBS_FAILED = Counter("imaginebot_jobs_failed", "Jobs that ended in failure.", ["engine", "platform"])
JOBS_CANCELLED = Counter("imaginebot_jobs_cancelled", "Jobs cancelled by their user.", ["engine", "platform"])
JOBS_REJECTED = Counter(
    "imaginebot_jobs_rejected", "Prompts refused before queueing (rate limits, full queue).", ["reason"]
)
WAIT_SECONDS = Histogram(
    "imaginebot_job_wait_seconds", "From submit to the start of drawing.", buckets=LATENCY_BUCKETS
)
ENGINE_SECONDS = Histogram(
    "imaginebot_engine_seconds", "Engine time for one job's images.", ["engine"], buckets=LATENCY_BUCKETS
)
DELIVERY_SECONDS = Histogram(
    "imaginebot_delivery_seconds",
    "From a job's end to its result posted in the conversation.",
    ["platform"],
    buckets=LATENCY_BUCKETS,
)
DELIVERY_RETRIES = Counter("imaginebot_delivery_retries", "Delivery attempts retried later.", ["platform"])
DELIVERY_FAILURES = Counter(
    "imaginebot_delivery_failures", "Deliveries given up (the platform refused for good).", ["platform"]
)
MODEL_SYNCS = Counter(
    "imaginebot_model_syncs",
    "Promoted model versions made ready on this worker: local (files already here and verified), "
    "fetched (copied from Redis and verified) or failed (not fetched or not verified: old model kept).",
    ["outcome"],
)
BATCH_SIZE = Histogram(
    "imaginebot_batch_size", "Jobs drawn together in one generate task.", buckets=(1, 2, 3, 4, 5, 6, 7, 8)
)
TASK_SECONDS = Histogram(
    "imaginebot_task_seconds", "Celery task run time.", ["task", "outcome"], buckets=LATENCY_BUCKETS
)


def count_job(counter: Counter, engines: Iterable[str], platform: str) -> None:
    """Add one to ``counter`` for each of a job's engines."""
    for engine in engines:
        counter.labels(engine=engine, platform=platform).inc()


def job_submitted(request: Any) -> None:
    """Count a job the queue accepted (``request`` is a :class:`core.jobs.JobRequest`)."""
    count_job(JOBS_SUBMITTED, request.engines, request.conversation.platform)


def job_cancelled(record: Any) -> None:
    """Count a job its user cancelled (``record`` is a :class:`core.jobs.JobRecord`)."""
    count_job(JOBS_CANCELLED, record.request.engines, record.request.conversation.platform)


def job_rejected(reason: str) -> None:
    """Count a prompt refused before queueing (``reason``: the error code, e.g. ``queue_full``)."""
    JOBS_REJECTED.labels(reason=reason).inc()


class QueueDepthCollector(Collector):
    """``imaginebot_queue_depth{queue}`` read from Redis at each scrape.

    ``gpu``, ``delivery`` and ``train`` are Celery's Redis lists (messages no worker has taken yet);
    ``pending`` is imaginebot's own set of jobs not yet started (it includes jobs a worker has
    taken from the list but not yet claimed, and jobs waiting inside a batch).
    """

    def __init__(self, client: redis.Redis) -> None:
        self.redis = client

    def collect(self) -> Iterator[GaugeMetricFamily]:
        """Yield the gauge family; on a Redis error, nothing (the scrape still succeeds)."""
        family = GaugeMetricFamily("imaginebot_queue_depth", "Messages waiting per queue.", labels=["queue"])
        try:
            pipe = self.redis.pipeline(transaction=False)
            for queue in ALL_QUEUES:
                pipe.llen(queue)
            pipe.zcard(PENDING_KEY)
            values = pipe.execute()
        except redis.RedisError as exc:
            log.warning("queue depth not available: %s", exc)
            return
        for name, value in zip((*ALL_QUEUES, "pending"), values, strict=True):
            family.add_metric([name], float(value))
        yield family


_collectors: dict[str, Collector] = {}
_collectors_lock = threading.Lock()


def register_collector(name: str, make: Any) -> None:
    """Register the collector ``make()`` once per process under ``name`` (later calls do nothing)."""
    with _collectors_lock:
        if name in _collectors:
            return
        collector = make()
        REGISTRY.register(collector)
        _collectors[name] = collector


def watch_queue_depth(client: redis.Redis) -> None:
    """Report the queue depths (read through ``client``) from this process's metrics.

    One collector per process; a later call points it at the later client (one Redis per process).
    """
    register_collector("queue_depth", lambda: QueueDepthCollector(client))
    collector = _collectors["queue_depth"]
    assert isinstance(collector, QueueDepthCollector)
    collector.redis = client


class _ThreadingWSGIServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        """Scrapes every few seconds would flood the log; stay quiet."""


def metrics_wsgi_app(client: redis.Redis | None) -> Any:
    """WSGI app: ``/healthz`` (200 while Redis answers PING, else 503) and the metrics on any other path."""
    metrics = make_wsgi_app(REGISTRY)

    def app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        if environ.get("PATH_INFO") == "/healthz":
            try:
                if client is not None:
                    client.ping()
                status, body = "200 OK", b"ok\n"
            except redis.RedisError:
                status, body = "503 Service Unavailable", b"redis unreachable\n"
            start_response(status, [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
            return [body]
        return metrics(environ, start_response)

    return app


class MetricsServer:
    """This process's metrics on ``host:port`` in a daemon thread (port 0 picks a free one)."""

    def __init__(self, port: int, host: str = "0.0.0.0", client: redis.Redis | None = None) -> None:
        self.server = make_server(
            host,
            port,
            metrics_wsgi_app(client),
            server_class=_ThreadingWSGIServer,
            handler_class=_QuietHandler,
        )
        self.port = int(self.server.server_address[1])
        self._thread = threading.Thread(target=self.server.serve_forever, name="metrics", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop serving and close the socket."""
        self.server.shutdown()
        self.server.server_close()


def serve_metrics(
    port: int | None, client: redis.Redis | None = None, host: str = "0.0.0.0"
) -> MetricsServer | None:
    """Start the metrics endpoint when ``port`` is set (``IMAGINEBOT_METRICS_PORT``); else do nothing.

    With ``client``, also report the queue depths and answer ``/healthz`` by pinging Redis.
    """
    if port is None:
        return None
    if client is not None:
        watch_queue_depth(client)
    try:
        server = MetricsServer(port, host, client)
    except OSError as exc:  # e.g. several processes of one machine given the same port
        log.error(
            "metrics not served: cannot listen on %s:%d (%s); give each process its own port", host, port, exc
        )
        return None
    log.info("metrics on http://%s:%d/metrics", host, server.port)
    return server
