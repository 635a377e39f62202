"""The worker's side of :mod:`core.heartbeats`: publish this process's liveness while it runs.

``imaginebot worker`` calls :func:`start_heartbeat` before it loads the engines (state "starting", so
front-ends can say "starting up"); a consumer bootstep turns the beat "ready" when Celery starts
taking tasks and deletes it at shutdown. A worker started any other way (``celery -A worker.app``,
the tests' in-process worker) gets its heartbeat from the bootstep alone.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from celery import Celery, bootsteps

from core.heartbeats import Heartbeat, WorkerBeat, worker_name
from core.settings import Settings
from core.store import connect
from core.task_contract import QUEUE_GPU

log = logging.getLogger(__name__)


def start_heartbeat(app: Celery, queues: list[str]) -> Heartbeat | None:
    """Publish ``app``'s worker as "starting" on ``queues`` and keep it fresh (idempotent)."""
    existing: Heartbeat | None = getattr(app, "imaginebot_heartbeat", None)
    if existing is not None:
        return existing
    settings: Settings | None = getattr(app, "imaginebot_settings", None)
    if settings is None or not settings.redis_url:
        return None
    engines: dict[str, str | None] = (
        {e: None for e in settings.enabled_engines} if any(q.startswith(QUEUE_GPU) for q in queues) else {}
    )
    beat = WorkerBeat(name=worker_name(), pid=os.getpid(), queues=list(queues), engines=engines)
    heartbeat = Heartbeat(connect(settings.redis_url), beat, refresh=lambda b: _engine_versions(app, b))
    app.imaginebot_heartbeat = heartbeat  # type: ignore[attr-defined]
    return heartbeat.start()


def _engine_versions(app: Celery, beat: WorkerBeat) -> None:
    """Fill in the versions of the engines this process has loaded (never loads one)."""
    from worker.runtime import loaded_runtime

    runtime = loaded_runtime(app)
    if runtime is None:
        return
    for name, version in runtime.engines.loaded_versions().items():
        if name in beat.engines:
            beat.engines[name] = version


class HeartbeatStep(bootsteps.StartStopStep):
    """Consumer bootstep: the heartbeat says "ready" while the worker consumes, and goes at shutdown."""

    requires = {"celery.worker.consumer.tasks:Tasks"}

    def start(self, c: Any) -> None:
        """Consuming now: publish "ready" (starting the heartbeat if the CLI did not)."""
        queues = sorted(q.name for q in c.task_consumer.queues) if c.task_consumer else []
        heartbeat = start_heartbeat(c.app, queues)
        if heartbeat is not None:
            heartbeat.update(state="ready", queues=queues or heartbeat.beat.queues)

    def shutdown(self, c: Any) -> None:
        """The worker stops: forget it at once."""
        heartbeat: Heartbeat | None = getattr(c.app, "imaginebot_heartbeat", None)
        if heartbeat is not None:
            heartbeat.stop()
            c.app.imaginebot_heartbeat = None


def install(app: Celery) -> None:
    """Add the heartbeat bootstep to ``app``'s consumer."""
    app.steps["consumer"].add(HeartbeatStep)
