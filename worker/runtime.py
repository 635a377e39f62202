"""Per-process state of a worker: Redis stores, the engine registry and the task producer."""

from __future__ import annotations

import os
import socket
import threading

from celery import Celery

from core.fair_queue import FairQueue, FairShare
from core.settings import Settings
from core.store import History, ImageStore, JobStore, connect
from worker.engines.loaded import LoadedEngines


class Runtime:
    """Created once per worker process (lazily, on the first task)."""

    def __init__(self, settings: Settings, app: Celery) -> None:
        if not settings.redis_url:
            raise ValueError("worker needs settings.redis_url")
        self.settings = settings
        self.app = app
        self.redis = connect(settings.redis_url)
        self.jobs = JobStore(self.redis, settings.result_ttl_s)
        self.images = ImageStore(self.redis, settings.result_ttl_s)
        self.history = History(self.redis, settings.result_ttl_s)
        self.engines = LoadedEngines(settings)
        self.fair = FairQueue(self.redis, policy=FairShare.from_settings(settings))
        self._fairs = {self.fair.route: self.fair}
        self.name = f"{socket.gethostname()}:{os.getpid()}"

    def fair_for(self, route: str) -> FairQueue:
        """The fair queue of ``route`` (the Celery queue a generate message came on)."""
        if route not in self._fairs:
            self._fairs[route] = FairQueue(self.redis, route, self.fair.policy)
        return self._fairs[route]


_runtimes: dict[int, Runtime] = {}
_lock = threading.Lock()


def runtime_for(app: Celery) -> Runtime:
    """The :class:`Runtime` of ``app`` in this process."""
    key = id(app)
    with _lock:
        if key not in _runtimes or _runtimes[key].app is not app:
            settings: Settings = getattr(app, "imaginebot_settings", None) or Settings()
            _runtimes[key] = Runtime(settings, app)
        return _runtimes[key]


def loaded_runtime(app: Celery) -> Runtime | None:
    """``app``'s :class:`Runtime` if this process has made it already (never makes one)."""
    runtime = _runtimes.get(id(app))
    return runtime if runtime is not None and runtime.app is app else None
