"""The body of the ``deliver`` task: post a job's outcome into its conversation exactly once."""

from __future__ import annotations

import importlib
import logging
import time

from core.delivery import DeliveryContext, DeliveryFailed, Sender
from core.jobs import JobRecord
from worker.runtime import Runtime

log = logging.getLogger(__name__)

#: platform -> module holding ``send(record, ctx)``. Each sender lives with its bot and imports no torch.
SENDERS = {
    "web": "bots.web.send",
    "telegram": "bots.telegram.send",
    "discord": "bots.discord.send",
}
LOCK_S = 120


def sender_for(platform: str) -> Sender:
    """The ``send`` function of ``platform``; raises :class:`DeliveryFailed` for an unknown one."""
    if platform == "cli":
        return _cli_send
    module_name = SENDERS.get(platform)
    if module_name is None:
        raise DeliveryFailed(f"no sender for platform {platform!r} in this release")
    return importlib.import_module(module_name).send


def _cli_send(record: JobRecord, ctx: DeliveryContext) -> None:
    """The CLI waits on the job record and reads the images from the store: nothing to post."""
    log.info("job %s (%s) is ready for the CLI", record.id, record.status.value)


def run_deliver(rt: Runtime, job_id: str) -> str:
    """Deliver ``job_id`` unless already delivered. Returns what happened (for logs and tests).

    Raises :class:`core.delivery.DeliveryRetry` when the platform says "later"; the task retries.
    """
    record = rt.jobs.get(job_id)
    if record.delivered_at is not None:
        return "already-delivered"
    if not record.status.finished:
        return "not-finished"
    # One sender at a time per job; the lock expires so a crashed sender does not block forever.
    lock_key = f"ib:delivering:{job_id}"
    if not rt.redis.set(lock_key, rt.name, nx=True, ex=LOCK_S):
        return "locked"
    try:
        record = rt.jobs.get(job_id)  # re-read under the lock
        if record.delivered_at is not None:
            return "already-delivered"
        ctx = DeliveryContext(settings=rt.settings, images=rt.images, history=rt.history)
        sender_for(record.request.conversation.platform)(record, ctx)
        rt.jobs.update(job_id, _mark_delivered)
        return "delivered"
    finally:
        rt.redis.delete(lock_key)


def _mark_delivered(record: JobRecord) -> JobRecord:
    record.delivered_at = time.time()
    return record
