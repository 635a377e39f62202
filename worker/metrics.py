"""Worker-side metrics, fed from Celery's task signals (the task bodies stay free of metric calls).

After a ``generate`` task, the job records it ran tell what finished or failed, how long each waited,
the engine time and the batch size; after a ``deliver`` task, how long delivery took or that it was
given up; ``task_retry`` counts delivery retries. Each task also binds its job (or run) id to the
log context, so JSON log lines about a job carry its id. See :mod:`core.metrics` for the metrics.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

from celery import Task
from celery.signals import task_failure, task_postrun, task_prerun, task_retry
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from core import logging_setup
from core.jobs import JobRecord, JobStatus
from core.metrics import (
    BATCH_SIZE,
    DELIVERY_FAILURES,
    DELIVERY_RETRIES,
    DELIVERY_SECONDS,
    ENGINE_SECONDS,
    JOBS_FAILED,
    JOBS_FINISHED,
    TASK_SECONDS,
    WAIT_SECONDS,
    count_job,
    register_collector,
)
from core.task_contract import DELIVER_TASK, GENERATE_TASK, TRAIN_TASK
from worker.runtime import runtime_for

log = logging.getLogger(__name__)

_started: dict[str, float] = {}
_installed = False
_install_lock = threading.Lock()


def _platform(record: JobRecord) -> str:
    return record.request.conversation.platform


def _job_records(task: Task, job_ids: list[str]) -> Iterator[JobRecord]:
    """The records of ``job_ids`` that still exist, read in one round trip (a batch has up to 8)."""
    if not job_ids:
        return
    jobs = runtime_for(task.app).jobs
    for raw in jobs.redis.mget([jobs.key(job_id) for job_id in job_ids]):
        if raw is not None:
            yield JobRecord.model_validate_json(raw)


def _observe_delivery(record: JobRecord) -> None:
    assert record.delivered_at is not None and record.finished_at is not None
    seconds = max(0.0, record.delivered_at - record.finished_at)
    DELIVERY_SECONDS.labels(platform=_platform(record)).observe(seconds)


def after_generate(task: Task, job_ids: list[str], started_at: float) -> None:
    """Count the jobs a ``generate`` task ran (those it finished itself, not re-deliveries)."""
    batch = 0
    engine_seconds: dict[str, float] = {}
    for record in _job_records(task, job_ids):
        if not record.status.finished or (record.finished_at or 0) < started_at:
            continue  # finished by an earlier task: this one only made sure it was delivered
        if record.status == JobStatus.CANCELLED:
            continue  # counted where it was cancelled
        batch += 1
        platform = _platform(record)
        if record.status == JobStatus.DONE:
            count_job(JOBS_FINISHED, record.request.engines, platform)
            if record.started_at is not None:
                WAIT_SECONDS.observe(max(0.0, record.started_at - record.created_at))
            for result in record.results:
                engine_seconds[result.engine] = result.seconds  # one figure per batch and engine
        else:
            count_job(JOBS_FAILED, record.request.engines, platform)
        if record.delivered_at is not None and record.finished_at is not None:  # delivered inline
            _observe_delivery(record)
    for engine, seconds in engine_seconds.items():
        ENGINE_SECONDS.labels(engine=engine).observe(seconds)
    if batch:
        BATCH_SIZE.observe(batch)


def after_deliver(task: Task, job_id: str, outcome: Any) -> None:
    """Observe the delivery latency, or count a delivery given up."""
    for record in _job_records(task, [job_id]):
        platform = _platform(record)
        if outcome == "delivered" and record.delivered_at is not None and record.finished_at is not None:
            _observe_delivery(record)
        elif outcome == "failed":
            DELIVERY_FAILURES.labels(platform=platform).inc()


def _on_prerun(task_id: str, task: Task, args: tuple[Any, ...] | None = None, **_: Any) -> None:
    _started[task_id] = time.time()
    first = str(args[0]) if args else None
    if task.name in (GENERATE_TASK, DELIVER_TASK):
        logging_setup.bind(job_id=first)
    elif task.name == TRAIN_TASK:
        logging_setup.bind(run_id=first)


def _on_postrun(
    task_id: str,
    task: Task,
    args: tuple[Any, ...] | None = None,
    retval: Any = None,
    state: str | None = None,
    **_: Any,
) -> None:
    started_at = _started.pop(task_id, None)
    try:
        if started_at is not None:
            TASK_SECONDS.labels(task=task.name, outcome=state or "UNKNOWN").observe(time.time() - started_at)
        if state != "SUCCESS":
            return
        if task.name == GENERATE_TASK and isinstance(retval, list) and started_at is not None:
            after_generate(task, [str(i) for i in retval], started_at)
        elif task.name == DELIVER_TASK and args:
            after_deliver(task, str(args[0]), retval)
    except Exception:  # metrics never break a task
        log.warning("metrics after %s failed", task.name, exc_info=True)
    finally:
        logging_setup.clear()


def _on_retry(sender: Task | None = None, request: Any = None, **_: Any) -> None:
    if sender is None or sender.name != DELIVER_TASK or not getattr(request, "args", None):
        return
    try:
        for record in _job_records(sender, [str(request.args[0])]):
            DELIVERY_RETRIES.labels(platform=_platform(record)).inc()
    except Exception:
        log.warning("metrics on retry failed", exc_info=True)


def _on_failure(sender: Task | None = None, args: tuple[Any, ...] | None = None, **_: Any) -> None:
    # A deliver task that ran out of retries ends here.
    if sender is None or sender.name != DELIVER_TASK or not args:
        return
    try:
        for record in _job_records(sender, [str(args[0])]):
            DELIVERY_FAILURES.labels(platform=_platform(record)).inc()
    except Exception:
        log.warning("metrics on failure failed", exc_info=True)


class GpuMemoryCollector(Collector):
    """``imaginebot_gpu_memory_bytes{device,kind}`` (allocated, reserved) when torch has CUDA."""

    def collect(self) -> Iterator[GaugeMetricFamily]:
        """Yield the gauge, or nothing on a machine without CUDA (or before torch is loaded)."""
        torch = sys.modules.get("torch")  # never import torch just for a scrape
        if torch is None or not torch.cuda.is_available():
            return
        family = GaugeMetricFamily(
            "imaginebot_gpu_memory_bytes",
            "GPU memory held by this worker's torch.",
            labels=["device", "kind"],
        )
        for index in range(torch.cuda.device_count()):
            family.add_metric([str(index), "allocated"], float(torch.cuda.memory_allocated(index)))
            family.add_metric([str(index), "reserved"], float(torch.cuda.memory_reserved(index)))
        yield family


def install() -> None:
    """Connect the signal handlers and the GPU memory collector, once per process."""
    global _installed
    with _install_lock:
        if _installed:
            return
        _installed = True
    task_prerun.connect(_on_prerun, weak=False, dispatch_uid="imaginebot-metrics-prerun")
    task_postrun.connect(_on_postrun, weak=False, dispatch_uid="imaginebot-metrics-postrun")
    task_retry.connect(_on_retry, weak=False, dispatch_uid="imaginebot-metrics-retry")
    task_failure.connect(_on_failure, weak=False, dispatch_uid="imaginebot-metrics-failure")
    register_collector("gpu_memory", GpuMemoryCollector)
