"""The body of the ``generate`` task: claim a job (and compatible waiting ones), draw, compose, store.

Claiming is a compare-and-set on the job record with a lease, which makes the task idempotent:
a duplicate or late message for a job that is done, or held by a live worker, does nothing; a job
whose worker died (lease expired) is taken over. Jobs that wait with the same engines, steps and
size are claimed together and drawn as one batch.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import redis

from core.compose import Panel, compose_pair, to_png
from core.errors import JobNotFound
from core.jobs import EngineResult, JobRecord, JobStatus, Progress
from core.store import PENDING_KEY
from worker.engines.base import GenerationCancelled, GenerationRequest
from worker.runtime import Runtime

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 3
MAX_BATCH = 8
PROGRESS_WRITE_S = 0.25


@dataclass
class Outcome:
    """What :func:`run_generate` did, for the task wrapper."""

    ran: list[str]  # job ids drawn (or failed) by this call; each needs a delivery
    recheck_in: float | None = None  # another worker holds the job: look again after this many s
    deliver_only: bool = False  # the job had already finished; make sure it is delivered


def _batch_key(record: JobRecord) -> tuple[tuple[str, ...], int, int]:
    return tuple(record.request.engines), record.steps, record.size


def claim(rt: Runtime, job_id: str) -> tuple[JobRecord | None, str]:
    """Try to take ``job_id``. Returns (record, why): record is set only when we now hold it."""
    now = time.time()
    verdict = {"why": ""}
    try:
        current = rt.jobs.get(job_id)  # cheap read first: most late duplicates end here, no write
    except JobNotFound:
        return None, "missing"
    if current.status.finished:
        rt.redis.zrem(PENDING_KEY, job_id)
        return None, "delivered" if current.delivered_at is not None else "finished"
    if current.status == JobStatus.RUNNING and (current.lease_until or 0) > now:
        return None, "held"

    def change(record: JobRecord) -> JobRecord:
        if record.status.finished:
            verdict["why"] = "finished"
            return record
        if record.status == JobStatus.RUNNING and (record.lease_until or 0) > now:
            verdict["why"] = "held"
            return record
        if record.attempts >= MAX_ATTEMPTS:
            record.status = JobStatus.FAILED
            record.error = f"Gave up after {MAX_ATTEMPTS} attempts: the worker kept stopping mid-job."
            record.finished_at = now
            verdict["why"] = "gave_up"
            return record
        record.status = JobStatus.RUNNING
        record.started_at = record.started_at or now
        record.worker = rt.name
        record.lease_until = now + rt.settings.job_lease_s
        record.attempts += 1
        verdict["why"] = "claimed"
        return record

    try:
        record = rt.jobs.update(job_id, change)
    except JobNotFound:
        return None, "missing"
    if verdict["why"] in ("claimed", "gave_up", "finished"):
        rt.redis.zrem(PENDING_KEY, job_id)
    return (record if verdict["why"] == "claimed" else None), verdict["why"] if verdict["why"] else "?"


def _collect_batch(rt: Runtime, first: JobRecord) -> list[JobRecord]:
    """``first`` plus up to MAX_BATCH-1 waiting jobs with the same engines, steps and size."""
    batch = [first]
    key = _batch_key(first)
    for raw_id in rt.redis.zrange(PENDING_KEY, 0, MAX_BATCH * 4):
        if len(batch) >= MAX_BATCH:
            break
        job_id = raw_id.decode() if isinstance(raw_id, bytes) else str(raw_id)
        if job_id == first.id:
            continue
        try:
            candidate = rt.jobs.get(job_id)
        except JobNotFound:
            rt.redis.zrem(PENDING_KEY, job_id)
            continue
        if candidate.status != JobStatus.QUEUED or _batch_key(candidate) != key:
            continue
        claimed, _ = claim(rt, job_id)
        if claimed is not None:
            batch.append(claimed)
    return batch


def run_generate(rt: Runtime, job_id: str) -> Outcome:
    """Claim ``job_id`` and draw it (with whatever compatible jobs wait beside it)."""
    record, why = claim(rt, job_id)
    if record is None:
        if why == "held":
            held = rt.jobs.get(job_id)
            return Outcome(ran=[], recheck_in=max(1.0, (held.lease_until or 0) - time.time() + 1.0))
        if why in ("finished", "gave_up"):
            # Finished but not delivered: the worker that drew it may have died before
            # sending the delivery. Delivery is idempotent, so make sure.
            return Outcome(ran=[job_id], deliver_only=True)
        return Outcome(ran=[])
    batch = _collect_batch(rt, record)
    _draw_batch(rt, batch)
    return Outcome(ran=[job.id for job in batch])


def _draw_batch(rt: Runtime, batch: list[JobRecord]) -> None:
    ids = [job.id for job in batch]
    engines = list(batch[0].request.engines)
    panels: dict[str, list[Panel]] = {job.id: [] for job in batch}
    results: dict[str, list[EngineResult]] = {job.id: [] for job in batch}
    # Start the throttle clock now: a one-pass engine (DF-GAN) then writes no progress at all,
    # and _finish overwrites the last report anyway.
    last_write = [time.monotonic()]
    live = set(ids)

    for engine_name in engines:

        def progress(step: int, total: int, engine_name: str = engine_name) -> bool:
            now = time.monotonic()
            if now - last_write[0] < PROGRESS_WRITE_S:
                return False
            last_write[0] = now
            for job_id in list(live):
                try:
                    rec = rt.jobs.update(
                        job_id, lambda r: _report(r, engine_name, step, total, rt.settings.job_lease_s)
                    )
                except redis.RedisError as exc:
                    # Redis is away: keep drawing (a progress report is not the job). The result is
                    # written when it is back; if it stays away, the task fails and is redelivered.
                    log.warning("progress of %s not written (Redis: %s)", job_id, exc)
                    return False
                if rec.status == JobStatus.CANCELLED:
                    live.discard(job_id)
            return not live  # stop only when every job of the batch was cancelled

        try:
            engine = rt.engines.get(engine_name)
            requests = [
                GenerationRequest(
                    prompt=job.request.prompt,
                    seeds=job.seeds,
                    steps=job.steps,
                    size=job.size,
                    negative_prompt=job.request.negative_prompt,
                )
                for job in batch
            ]
            started = time.perf_counter()
            images = engine.generate(requests, progress)
            seconds = time.perf_counter() - started
        except GenerationCancelled:
            for job in batch:
                rt.redis.zrem(PENDING_KEY, job.id)
            return
        except redis.RedisError:
            # Not the engine's fault: leave the jobs running; the task fails, the message is redelivered
            # and the jobs are taken over when their lease lapses.
            raise
        except Exception as exc:  # an engine failure fails these jobs, not the worker
            log.exception("engine %s failed on %s", engine_name, ids)
            message = f"The {engine_name} engine failed: {type(exc).__name__}: {str(exc)[:200]}"
            for job in batch:
                rt.jobs.update(job.id, lambda r, m=message: _finish(r, JobStatus.FAILED, error=m))
            return
        for job, job_images in zip(batch, images, strict=True):
            keys = [
                rt.images.put(job.id, f"{engine_name}-{i}", to_png(img)) for i, img in enumerate(job_images)
            ]
            results[job.id].append(
                EngineResult(
                    engine=engine_name, version=engine.info.version, seconds=seconds, image_keys=keys
                )
            )
            panels[job.id].append(Panel(engine_name, engine.info.version, seconds, job_images))

    for job in batch:
        if job.id not in live:
            continue  # cancelled while drawing; the cancel already told the conversation
        pair = compose_pair(panels[job.id], job.request.prompt, job.seed)
        pair_key = rt.images.put(job.id, "pair", to_png(pair))
        rt.jobs.update(
            job.id,
            lambda r, j=job, key=pair_key: _finish(
                r, JobStatus.DONE, results=results[j.id], pair_key=key, batch_size=len(batch)
            ),
        )


def _report(record: JobRecord, engine: str, step: int, total: int, lease_s: float) -> JobRecord:
    if record.status == JobStatus.RUNNING:
        record.progress = Progress(engine=engine, step=step, total=total)
        record.lease_until = time.time() + lease_s
    return record


def _finish(record: JobRecord, status: JobStatus, **fields: object) -> JobRecord:
    if record.status == JobStatus.CANCELLED:
        return record  # a cancel that raced the end of the run wins
    record.status = status
    record.finished_at = time.time()
    record.lease_until = None
    for name, value in fields.items():
        setattr(record, name, value)
    return record
