"""Celery tasks. Each takes a job id (never a blob) and is safe to run twice."""

from __future__ import annotations

import logging
import time
from typing import Any

import redis
from celery import Task, shared_task
from celery.signals import worker_ready

from core.delivery import DeliveryAmbiguous, DeliveryFailed, DeliveryLocked, DeliveryRetry
from core.errors import JobNotFound
from core.task_contract import (
    DELIVER_TASK,
    GENERATE_TASK,
    PING_PREFIX,
    PING_TASK,
    QUEUE_DELIVERY,
    QUEUE_GPU,
    TRAIN_TASK,
)
from worker.deliver import LOCAL_PLATFORMS, MAX_SEND_ATTEMPTS, give_up, journal_of, run_deliver, sweep
from worker.generate import run_generate
from worker.runtime import Runtime, runtime_for
from worker.train_lease import schedule_recheck
from worker.train_task import run_train

log = logging.getLogger(__name__)
MAX_DELIVERY_RETRIES = MAX_SEND_ATTEMPTS
#: Longest wait between two sends of one job (backoff 2, 4, 8... seconds, capped here).
MAX_BACKOFF_S = 60.0
#: Retry after Redis (the broker) failed mid-task, once it answers again; wait at most this long.
REDIS_RETRY_S = 2.0
REDIS_WAIT_S = 600.0
INLINE_PLATFORMS = LOCAL_PLATFORMS


@shared_task(bind=True, name=PING_TASK)
def ping(self: Task, key: str) -> None:
    """Do nothing but write the time it ran under ``key`` (an ``ib:ping:`` key, kept a minute): a bare
    Celery round trip on the same broker, the floor that the queue's own overhead is measured against."""
    if not key.startswith(PING_PREFIX) or len(key) > 80:
        log.warning("ping: refused key %r", key[:80])
        return
    runtime_for(self.app).redis.set(key, repr(time.time()), ex=60)


@shared_task(bind=True, name=GENERATE_TASK)
def generate(self: Task, job_id: str, route: str = QUEUE_GPU) -> list[str]:
    """Draw the next jobs of ``route`` in fair order (``job_id``'s message is the wake-up) and chain a
    delivery for each."""
    rt = runtime_for(self.app)
    try:
        outcome = run_generate(rt, job_id, route)
    except redis.RedisError as exc:
        # Redis went away mid-job. The job stays "running" under its lease; retry once Redis is back
        # (a retry needs the broker: sent while it is down, it would be dropped).
        log.warning("generate: job %s: Redis error, retrying when it is back: %s", job_id, exc)
        wait_for_redis(rt)
        raise self.retry(exc=exc, countdown=REDIS_RETRY_S, max_retries=None) from exc
    if outcome.recheck_in is not None:
        # Another worker holds the lease; look again when it would have expired, so the job is
        # taken over if that worker died.
        self.app.send_task(
            GENERATE_TASK, args=[job_id], kwargs={"route": route}, queue=route, countdown=outcome.recheck_in
        )
    for done_id in outcome.ran:
        if done_id in outcome.delivered:
            continue  # delivered in the round trip that finished it
        if not _deliver_inline(rt, done_id):
            self.app.send_task(DELIVER_TASK, args=[done_id], queue=QUEUE_DELIVERY)
    return outcome.ran


def _deliver_inline(rt: Runtime, job_id: str) -> bool:
    """Deliver local conversations (web, CLI) right here, saving a Celery hop per job.

    They only write to Redis, so they cannot be slow or rate limited. Chat platforms, whose
    tokens and retries belong to the delivery worker, go through the ``deliver`` task.
    """
    try:
        record = rt.jobs.get(job_id)
        if record.request.conversation.platform not in INLINE_PLATFORMS:
            return False
        run_deliver(rt, job_id, record)
        return True
    except Exception:  # anything odd: fall back to the deliver task, which retries
        log.exception("inline delivery of %s failed; queueing the deliver task", job_id)
        return False


@shared_task(bind=True, name=DELIVER_TASK, max_retries=None)
def deliver(self: Task, job_id: str) -> str:
    """Post job ``job_id``'s outcome to its conversation; retried with backoff, never posted twice.

    The retry budget is counted in the job's delivery journal (sends made), not in Celery's retries:
    waiting for another delivery's lease to lapse costs nothing. Past the budget, or on a refusal for
    good, the job is marked failed and the conversation is told (worker/deliver.py ``give_up``).
    """
    rt = runtime_for(self.app)
    try:
        return run_deliver(rt, job_id)
    except JobNotFound:
        log.warning("deliver: job %s expired before delivery", job_id)
        return "missing"
    except DeliveryLocked as exc:  # never an ack: retry when the lease can have lapsed
        raise self.retry(exc=exc, countdown=exc.retry_after) from exc
    except DeliveryRetry as exc:
        sends = int(journal_of(rt, job_id).get("attempts", 0))
        if sends >= MAX_SEND_ATTEMPTS:
            log.error("deliver: job %s not posted after %d sends: %s", job_id, sends, exc)
            return give_up(rt, job_id, str(exc))
        if isinstance(exc, DeliveryAmbiguous):
            countdown = 1.0  # the retry resolves it without posting again; no need to wait
        elif exc.retry_after is not None:
            countdown = exc.retry_after
        else:
            countdown = min(MAX_BACKOFF_S, 2.0**sends)
        log.info("deliver: job %s retries in %.1f s: %s", job_id, countdown, exc)
        raise self.retry(exc=exc, countdown=countdown) from exc
    except DeliveryFailed as exc:
        log.error("deliver: job %s cannot be delivered: %s", job_id, exc)
        return give_up(rt, job_id, str(exc))
    except redis.RedisError as exc:  # Redis went away mid-delivery: the journal resolves the retry
        log.warning("deliver: job %s: Redis error, retrying when it is back: %s", job_id, exc)
        wait_for_redis(rt)
        raise self.retry(exc=exc, countdown=REDIS_RETRY_S) from exc


def wait_for_redis(rt: Runtime, limit_s: float = REDIS_WAIT_S) -> bool:
    """Wait (bounded) until Redis answers again; True if it does. A task that retries while the
    broker is down has its retry dropped by Celery, so it waits here first."""
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        try:
            if rt.redis.ping():
                return True
        except redis.RedisError:
            pass
        time.sleep(1.0)
    return False


@worker_ready.connect
def sweep_deliveries(sender: Any = None, **_: Any) -> None:
    """When a worker that serves the ``delivery`` queue starts, re-queue the deliveries a dead worker
    left unfinished (worker/deliver.py ``sweep``)."""
    try:
        queues = {queue.name for queue in sender.task_consumer.queues}
        app = sender.app
    except AttributeError:  # not a consumer we know how to read: leave it to the visibility timeout
        return
    if QUEUE_DELIVERY not in queues:
        return
    try:
        sweep(runtime_for(app))
    except redis.RedisError as exc:
        log.warning("could not sweep unfinished deliveries: %s", exc)


@shared_task(bind=True, name=TRAIN_TASK)
def train(self: Task, run_id: str, recheck_token: str | None = None) -> str:
    """Take retraining run ``run_id`` to its end (resuming its checkpoint); see worker/train_task.py."""
    rt = runtime_for(self.app)
    outcome = run_train(rt, run_id)
    if outcome.recheck_in is not None:
        schedule_recheck(rt, self.app, run_id, outcome.recheck_in, recheck_token)
    return outcome.state
