"""Worker liveness in Redis: who is up, which queues and engines each serves, and what to tell a user
whose job no live worker can draw.

Each worker process keeps one key ``ib:worker:<host>:<pid>`` fresh (a JSON :class:`WorkerBeat`,
rewritten every :data:`BEAT_INTERVAL_S` with a :data:`BEAT_TTL_S` expiry): a worker that dies or
hangs disappears on its own. The set ``ib:workers`` indexes the names so readers need no SCAN.
``imaginebot up`` also publishes the state of the children it supervises (``ib:supervisor:*``) so the
web chat's health and ``imaginebot status`` can say when it gave up on one.

Torch-free and chat-library-free: front-ends, the CLI and the workers all read it.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import redis
from pydantic import BaseModel, Field

from core.errors import InputError
from core.jobs import JobRecord, JobStatus
from core.store import PENDING_KEY

log = logging.getLogger(__name__)

BEAT_INTERVAL_S = 5.0
#: A worker silent this long is gone (dead or hung); a few missed beats are tolerated on a busy host.
BEAT_TTL_S = 30
WORKERS_KEY = "ib:workers"
WORKER_PREFIX = "ib:worker:"
SUPERVISOR_PREFIX = "ib:supervisor:"
SUPERVISORS_KEY = "ib:supervisors"
GPU_QUEUE = "gpu"  # core.task_contract.QUEUE_GPU (kept literal: this module imports no Celery)


Record = TypeVar("Record", bound=BaseModel)


@dataclass(frozen=True)
class _ExpiringIndex:
    """Records under ``prefix + name``, each with an expiry, indexed by name in the set ``index``:
    a writer that stops refreshing its record disappears on its own, and readers need no SCAN."""

    prefix: str
    index: str

    def publish(self, client: redis.Redis, name: str, record: BaseModel, ttl_s: int) -> None:
        """Write ``record`` as ``name``'s entry, expiring after ``ttl_s``."""
        pipe = client.pipeline(transaction=False)
        pipe.set(self.prefix + name, record.model_dump_json(), ex=ttl_s)
        pipe.sadd(self.index, name)
        pipe.execute()

    def remove(self, client: redis.Redis, name: str) -> None:
        """Forget ``name`` at once."""
        pipe = client.pipeline(transaction=False)
        pipe.delete(self.prefix + name)
        pipe.srem(self.index, name)
        pipe.execute()

    def read(self, client: redis.Redis, model: type[Record], what: str) -> list[Record]:
        """Every unexpired entry, by name; expired names are pruned, an unreadable one is logged
        (as ``what``) and skipped."""
        names = sorted(n.decode() for n in client.smembers(self.index))
        if not names:
            return []
        records = []
        for name, raw in zip(names, client.mget([self.prefix + n for n in names]), strict=True):
            if raw is None:
                client.srem(self.index, name)
                continue
            try:
                records.append(model.model_validate_json(raw))
            except ValueError:
                log.warning("unreadable %s %s", what, name)
        return records


_WORKERS = _ExpiringIndex(WORKER_PREFIX, WORKERS_KEY)
_SUPERVISORS = _ExpiringIndex(SUPERVISOR_PREFIX, SUPERVISORS_KEY)


def worker_name(pid: int | None = None) -> str:
    """The name a worker process publishes under: ``host:pid`` (as :class:`worker.runtime.Runtime`)."""
    return f"{socket.gethostname()}:{os.getpid() if pid is None else pid}"


def worker_key(name: str) -> str:
    """The Redis key of worker ``name``'s heartbeat."""
    return WORKER_PREFIX + name


class WorkerBeat(BaseModel):
    """What one worker says about itself."""

    name: str
    pid: int
    queues: list[str]
    engines: dict[str, str | None] = Field(
        default_factory=dict, description="Engine name -> loaded version (None: not loaded yet)"
    )
    state: str = Field(default="starting", description="starting (loading engines) | ready")
    started_at: float = Field(default_factory=time.time)
    beat_at: float = Field(default_factory=time.time)

    @property
    def serves_images(self) -> bool:
        """Whether it takes image jobs (the ``gpu`` queue, or a model's ``gpu.<name>``)."""
        return any(q == GPU_QUEUE or q.startswith(f"{GPU_QUEUE}.") for q in self.queues)


def publish(client: redis.Redis, beat: WorkerBeat, ttl_s: int = BEAT_TTL_S) -> None:
    """Write ``beat`` (fresh ``beat_at``) with its expiry and index it."""
    beat.beat_at = time.time()
    _WORKERS.publish(client, beat.name, beat, ttl_s)


def remove(client: redis.Redis, name: str) -> None:
    """Forget worker ``name`` at once (clean shutdown, or its supervisor saw it die)."""
    _WORKERS.remove(client, name)


def live_workers(client: redis.Redis) -> list[WorkerBeat]:
    """Workers whose heartbeat has not expired, oldest first; expired names are pruned."""
    beats = _WORKERS.read(client, WorkerBeat, "heartbeat of worker")
    return sorted(beats, key=lambda b: b.started_at)


def worker_notice(client: redis.Redis, engines: list[str]) -> str | None:
    """What to add to a queued job's answer when no live worker can draw ``engines``; None when one can.

    "Starting up" when a worker that will serve them is still loading its engines, else names the
    engines nobody serves. A Redis error gives None: the notice is a courtesy, never a failure.
    """
    try:
        workers = [w for w in live_workers(client) if w.serves_images]
        ready = {e for w in workers if w.state == "ready" for e in w.engines}
        missing = [e for e in engines if e not in ready]
        if not missing:
            return None
        starting = {e for w in workers if w.state != "ready" for e in w.engines}
        # A worker that `up` has just (re)started has not published anything yet; its engines are
        # not known, but it shares the settings the job was validated with.
        launching = any(
            c.starting and GPU_QUEUE in c.queues for r in supervisor_reports(client) for c in r.children
        )
    except redis.RedisError:
        return None
    if launching or all(e in starting for e in missing):
        return "No worker is running yet — starting up. Your picture follows once it is ready."
    return (
        f"No worker is serving {' or '.join(missing)} right now. "
        "Your picture waits in the queue until one is."
    )


def refuse_unserved(client: redis.Redis, model: str | None) -> None:
    """Raise an :class:`InputError` at once when workers are up but none serves diffusion model
    ``model`` (its queue ``gpu.<model>``): such a job would wait forever. With no worker up at all the
    job is queued (a worker may be starting) and :func:`job_notice` says so."""
    if not model or model == "default":
        return
    queue = f"{GPU_QUEUE}.{model}"
    beats = [beat for beat in live_workers(client) if beat.serves_images]
    if not beats or any(queue in beat.queues for beat in beats):
        return
    served = sorted(
        {q.split(".", 1)[1] for beat in beats for q in beat.queues if q.startswith(f"{GPU_QUEUE}.")}
    )
    elsewhere = (
        f" Models being served: {', '.join(served)}." if served else " Only the default model is served."
    )
    raise InputError(
        "model_not_served",
        f"No worker has the model {model} right now, so nothing could draw it.{elsewhere}",
        retry_after=60.0,
    )


def job_notice(client: redis.Redis, record: JobRecord) -> str | None:
    """:func:`worker_notice` for a job that is still waiting; None once a worker has it."""
    if record.status != JobStatus.QUEUED:
        return None
    return worker_notice(client, record.request.engines)


class Heartbeat:
    """Keeps a worker's :class:`WorkerBeat` fresh from a daemon thread until :meth:`stop`.

    ``refresh`` (called before each beat) may update the beat, e.g. the engines' loaded versions.
    Redis errors are logged once per outage and retried at the next beat; they never reach the worker.
    """

    def __init__(
        self,
        client: redis.Redis,
        beat: WorkerBeat,
        interval_s: float = BEAT_INTERVAL_S,
        ttl_s: int = BEAT_TTL_S,
        refresh: Callable[[WorkerBeat], None] | None = None,
    ) -> None:
        self.client = client
        self.beat = beat
        self.interval_s = interval_s
        self.ttl_s = ttl_s
        self.refresh = refresh
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._failing = False

    def start(self) -> Heartbeat:
        """Publish now and keep publishing in the background."""
        self._beat_once()
        self._thread = threading.Thread(target=self._run, name="worker-heartbeat", daemon=True)
        self._thread.start()
        return self

    def update(self, **changes: object) -> None:
        """Change fields of the beat (``state``, ``engines``) and publish at once."""
        for name, value in changes.items():
            setattr(self.beat, name, value)
        self._wake.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.interval_s)
            self._wake.clear()
            if not self._stop.is_set():
                self._beat_once()

    def _beat_once(self) -> None:
        try:
            if self.refresh is not None:
                self.refresh(self.beat)
            publish(self.client, self.beat, self.ttl_s)
            if self._failing:
                log.info("heartbeat of %s published again", self.beat.name)
            self._failing = False
        except Exception as exc:  # Redis down, or a refresh that failed: try again next beat
            if not self._failing:
                log.warning("heartbeat of %s not published: %s", self.beat.name, exc)
            self._failing = True

    def stop(self, forget: bool = True) -> None:
        """Stop beating and (``forget``) delete the key, so readers see the worker gone at once."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=2)
        if forget:
            try:
                remove(self.client, self.beat.name)
            except redis.RedisError:
                pass  # it expires on its own


# --- the supervisor's report ---------------------------------------------------------------------


class ChildState(BaseModel):
    """One child of ``imaginebot up`` as its supervisor sees it."""

    name: str
    pid: int | None
    state: str = Field(description="running | restarting | gave up | stopping | stopped")
    restarts: int = 0
    message: str | None = Field(default=None, description="Why it is restarting or was given up on")
    queues: list[str] = Field(default_factory=list, description="A worker's queues (empty: not a worker)")
    starting: bool = Field(default=False, description="A worker (re)started that has not beaten yet")


class SupervisorReport(BaseModel):
    """What ``imaginebot up`` publishes about its children."""

    name: str
    children: list[ChildState]
    at: float = Field(default_factory=time.time)

    @property
    def problems(self) -> list[str]:
        """One line per child given up on."""
        return [c.message or f"{c.name} stopped" for c in self.children if c.state == "gave up"]


def publish_supervisor(client: redis.Redis, report: SupervisorReport, ttl_s: int = BEAT_TTL_S) -> None:
    """Write ``report`` with an expiry (it vanishes when ``up`` is gone)."""
    report.at = time.time()
    _SUPERVISORS.publish(client, report.name, report, ttl_s)


def remove_supervisor(client: redis.Redis, name: str) -> None:
    """Forget supervisor ``name`` (it is stopping)."""
    _SUPERVISORS.remove(client, name)


def supervisor_reports(client: redis.Redis) -> list[SupervisorReport]:
    """Reports of the live supervisors (normally one: ``imaginebot up``)."""
    return _SUPERVISORS.read(client, SupervisorReport, "report of supervisor")


# --- a summary for health checks and ``imaginebot status`` ------------------------------------------


def queue_depth(client: redis.Redis, queue: str) -> int:
    """Messages waiting in Celery queue ``queue`` (kombu's Redis lists, priority lists included)."""
    names = [queue] + [f"{queue}\x06\x16{p}" for p in (1, 2, 3, 4, 5, 6, 7, 8, 9)]
    pipe = client.pipeline(transaction=False)
    for name in names:
        pipe.llen(name)
    return sum(int(n) for n in pipe.execute())


def oldest_waiting(client: redis.Redis) -> tuple[str, float] | None:
    """The id and submit time of the job that has waited longest, or None when none waits."""
    oldest = client.zrange(PENDING_KEY, 0, 0, withscores=True)
    if not oldest:
        return None
    job_id, created_at = oldest[0]
    return job_id.decode(), float(created_at)


def health_summary(client: redis.Redis, engines: list[str]) -> dict[str, object]:
    """Workers, the notice for ``engines`` and the supervisor's problems, as JSON-ready data."""
    workers = live_workers(client)
    return {
        "workers": [{"queues": w.queues, "engines": w.engines, "state": w.state} for w in workers],
        "notice": worker_notice(client, engines),
        "problems": [p for r in supervisor_reports(client) for p in r.problems],
    }
