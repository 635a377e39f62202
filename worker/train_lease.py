"""Holding a training run: its record's lease, the one training lock, and the re-check chain.

- The run record's lease (:mod:`core.leases`, as for image jobs): a worker claims the run and renews
  ``lease_until`` from a :class:`Heartbeat` thread. A copy of the task that arrives while the lease is
  live schedules a re-check (:func:`schedule_recheck`) and leaves; a copy arriving after the owner died
  (no renewal) takes the run over.
- The training lock ``ib:trainrun:lock`` (:func:`training_lock`; value: the run id, expiry: the lease,
  renewed by the same heartbeat): one run at a time across all train workers; a dead worker's lock
  lapses.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from typing import Any

from core.leases import Hold, KeyLease
from core.train_runs import LOCK_KEY, TrainRun, TrainRunStore
from worker.runtime import Runtime

log = logging.getLogger(__name__)

RECHECK_GRACE_S = 120.0  # a pending re-check's marker outlives its countdown by this much

# Hand the re-check marker over from the pending re-check's token (or from nobody) to a new one.
_HANDOVER = "local v = redis.call('GET', KEYS[1]) if v == false or v == ARGV[1] then " \
    "redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3]) return 1 end return 0"  # fmt: skip


def training_lock(rt: Runtime, run_id: str) -> KeyLease:
    """The one training lock (``ib:trainrun:lock``) as ``run_id`` would hold it: its token is the run
    id (so a retried attempt of the same run takes it again), its TTL one job lease."""
    return KeyLease(rt.redis, LOCK_KEY, run_id, rt.settings.job_lease_s)


class Heartbeat:
    """Renews the run's lease and the training lock every lease/3 s from a thread; notices when the
    run was cancelled or taken over (then :attr:`stop_requested` is set and training stops)."""

    def __init__(self, rt: Runtime, store: TrainRunStore, run_id: str) -> None:
        self.rt, self.store, self.run_id = rt, store, run_id
        self.lock = training_lock(rt, run_id)
        self.lost = False
        self.cancelled = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"lease-{run_id}", daemon=True)

    @property
    def stop_requested(self) -> bool:
        """True when training should stop now (cancelled, or another worker owns the run)."""
        return self.lost or self.cancelled

    def start(self) -> None:
        """Start renewing."""
        self._thread.start()

    def stop(self) -> None:
        """Stop renewing (the lease then lapses unless the record was finished)."""
        self._stop.set()
        self._thread.join(timeout=10)

    def beat(self, **fields: Any) -> TrainRun:
        """Renew now, writing ``fields`` into the record too; returns the stored record. A run we
        finished a moment ago is still ours, so the lock stays ours to free."""
        run, hold = self.store.renew(
            self.run_id, self.rt.settings.job_lease_s, owner=self.rt.name, updated_at=time.time(), **fields
        )
        self.cancelled = self.cancelled or hold == Hold.CANCELLED
        self.lost = self.lost or hold == Hold.LOST
        if not self.stop_requested:
            self.lock.renew()
        return run

    def _loop(self) -> None:
        interval = max(0.2, self.rt.settings.job_lease_s / 3)
        while not self._stop.wait(interval):
            try:
                self.beat()
            except Exception:  # Redis hiccup: the next beat tries again, well within the lease
                log.exception("heartbeat of training run %s failed", self.run_id)


def schedule_recheck(
    rt: Runtime, app: Any, run_id: str, delay_s: float, token: str | None = None
) -> str | None:
    """Send the ``train`` task for ``run_id`` again after ``delay_s``; returns the new re-check's
    token, or None when another re-check is pending.

    Only one chain of re-checks exists per run: the pending one's token sits in
    ``ib:trainrun:<id>:recheck``, and only the task carrying that token (or any task once the key
    lapsed) may schedule the next. Copies of a message that the broker delivered twice then cannot
    multiply the re-checks, and the chain cannot die of its own marker.
    """
    from core.task_contract import QUEUE_TRAIN, TRAIN_TASK

    new = uuid.uuid4().hex
    ttl_ms = int((delay_s + RECHECK_GRACE_S) * 1000)
    if not rt.redis.eval(_HANDOVER, 1, f"ib:trainrun:{run_id}:recheck", token or "", new, ttl_ms):
        return None
    app.send_task(TRAIN_TASK, args=[run_id, new], queue=QUEUE_TRAIN, countdown=delay_s)
    return new
