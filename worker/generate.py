"""The body of the ``generate`` task: claim a job (and compatible waiting ones), draw, store.

Claiming is a compare-and-set on the job record with a lease (:mod:`core.leases`), which makes the
task idempotent: a duplicate or late message for a job that is done, or held by a live worker, does
nothing; a job whose worker died (lease expired) is taken over. Jobs that wait with the same
engines, steps and size are claimed together and drawn as one batch.

The hot path is four round trips to Redis per batch: the fair queue's claim script (which also returns
the taken records), one pipeline that leases them all and confirms them to the fair queue, one that
stores every picture and finishes every record, and one that charges the users. The paired image is
composed by whoever reads it first (:mod:`core.pairs`), not here.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Any

import redis
from PIL import Image

from core.compose import to_png
from core.errors import JobNotFound
from core.events import publish
from core.fair_queue import STALE_TAKEN_S, FairQueue, Taken, batch_key_of
from core.jobs import EngineResult, JobRecord, JobStatus, Progress
from core.leases import Claim, Hold, Verdict, ended_copy, swapped
from core.model_catalog import engine_model
from core.pairs import PAIR
from core.png_metadata import picture_parameters
from core.store import PENDING_KEY, ImageStore
from core.task_contract import QUEUE_GPU
from core.uploads import UploadStore
from worker.deliver import local_delivered, queue_local_delivery
from worker.engines.base import Engine, GenerationCancelled
from worker.engines.job_requests import generation_request, result_marks
from worker.previews import EngineProgress, LivePreviews
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
    #: Those of ``ran`` already delivered, in the round trip that finished them (local conversations)
    delivered: list[str] = field(default_factory=list)


def claim(rt: Runtime, job_id: str) -> Claim[JobRecord]:
    """Try to take ``job_id`` for this worker (:meth:`core.leases.LeasedStore.claim`); a job that
    will not wait any more (claimed, finished, given up) leaves the pending set."""
    taken = rt.jobs.claim(job_id, rt.name, rt.settings.job_lease_s, MAX_ATTEMPTS)
    if taken.verdict in (Verdict.CLAIMED, Verdict.GAVE_UP, Verdict.ALREADY_DONE):
        rt.redis.zrem(PENDING_KEY, job_id)
    return taken


def run_generate(rt: Runtime, job_id: str, route: str = QUEUE_GPU) -> Outcome:
    """Draw the next jobs in fair order (:mod:`core.fair_queue`), batched; then see to the message's
    own job if the fair queue does not have it.

    The Celery message is a wake-up that carries no ordering promise: one message per job, and each
    takes the job whose user has had the least GPU time. The message's own job is handled directly
    only when it is not in the fair queue at all: a duplicate or late message (finished, or held by
    another worker), or a job that a dead worker took and nobody put back yet.
    """
    fair = rt.fair_for(route)
    stale_after = min(STALE_TAKEN_S, rt.settings.job_lease_s)
    # The registry's promoted versions are read with the take: what the batch's engines check.
    checks = rt.engines.promoted_keys()
    taken = fair.take(MAX_BATCH, own=job_id, stale_after_s=stale_after, also_read=checks)
    if taken.stale and _requeue_stale(fair, rt, taken.stale) and not taken.claimed:
        # back in line: take again
        taken = fair.take(MAX_BATCH, own=job_id, stale_after_s=stale_after, also_read=checks)
    drawn = _draw_taken(fair, rt, taken.records, taken.also)
    if taken.own == "taken" and job_id not in taken.claimed:
        # Another worker took it from the queue and has not claimed its record yet: look again once
        # it would count as stale, so that a worker dying in between loses nothing.
        return replace(drawn, recheck_in=stale_after + 1.0)
    if taken.own == "waiting" or job_id in taken.claimed:
        return drawn
    own = _run_own(rt, job_id, taken)
    return Outcome(
        ran=drawn.ran + own.ran,
        recheck_in=own.recheck_in,
        deliver_only=own.deliver_only,
        delivered=drawn.delivered + own.delivered,
    )


def _draw_taken(
    fair: FairQueue, rt: Runtime, records: dict[str, bytes | None], promoted: dict[str, bytes | None]
) -> Outcome:
    """Claim the records of jobs taken from the fair queue (``records``: as the claim script read
    them) in one round trip that also confirms them there, draw the ones now held as one batch, and
    charge their users the measured time. ``promoted``: the registry's promoted versions, read with
    the take. Returns the ids that need a delivery (and those of them delivered already)."""
    if not records:
        return Outcome(ran=[])
    job_ids = list(records)
    lease_s = rt.settings.job_lease_s
    claims = rt.jobs.claim_many(
        records, rt.name, lease_s, MAX_ATTEMPTS, also=lambda pipe: fair.queue_confirm(pipe, job_ids)
    )
    batch = [c.held for c in claims if c.held is not None]
    given_up = [c.record.id for c in claims if c.verdict == Verdict.GAVE_UP and c.record is not None]
    delivered: list[str] = []
    if batch:
        loaded = _load_engines(rt, batch[0], promoted)
        started = time.perf_counter()
        delivered = _draw_batch(rt, batch, loaded)
        fair.settle(
            batch_key_of(batch[0]), [job.request.user for job in batch], time.perf_counter() - started
        )
    return Outcome(ran=[job.id for job in batch] + given_up, delivered=delivered)


def _load_engines(rt: Runtime, job: JobRecord, promoted: dict[str, bytes | None]) -> dict[str, Engine]:
    """Load the job's engines (once per process; a newly promoted version, as in ``promoted``, is
    swapped in here) before its batch's clock starts: loading is not a job's cost. Returns them by
    name, for the draw to use without asking again. A model this worker cannot load is left to the
    draw, which fails the jobs clearly."""
    loaded: dict[str, Engine] = {}
    for engine_name in job.request.engines:
        try:
            model = engine_model(job.request, engine_name)
            loaded[engine_name] = rt.engines.get(engine_name, model, promoted)
        except Exception:  # noqa: BLE001 - reported by the draw itself, per job
            break
    return loaded


def _requeue_stale(fair: FairQueue, rt: Runtime, job_ids: list[str]) -> int:
    """Jobs a worker took from the fair queue and never confirmed: back in line if their records were
    never claimed (that worker died in between), otherwise forgotten there."""
    waiting, held = [], []
    for job_id in job_ids:
        try:
            status = rt.jobs.get(job_id).status
        except JobNotFound:
            status = None
        (waiting if status == JobStatus.QUEUED else held).append(job_id)
    fair.confirm(held)
    if not waiting:
        return 0
    log.warning("putting back %d job(s) a worker took and never claimed: %s", len(waiting), waiting)
    return fair.requeue(waiting)


def _run_own(rt: Runtime, job_id: str, found: Taken | None = None) -> Outcome:
    """The message's own job, outside the fair queue: claim it directly and act on the verdict.

    ``found``: what the fair queue's take said of it. A job that had finished when it was taken (the
    late message of a job drawn in another batch: most messages of a burst) needs no further round
    trip: nothing to do once delivered, else a delivery to make sure of."""
    record = _finished(found.own_record) if found is not None and not found.own_pending else None
    if record is not None:
        if record.delivered_at is not None:
            return Outcome(ran=[])
        return Outcome(ran=[job_id], deliver_only=True)
    taken = claim(rt, job_id)
    if taken.verdict == Verdict.HELD_BY_OTHER:
        return Outcome(ran=[], recheck_in=taken.recheck_in())
    undelivered = taken.record is not None and taken.record.delivered_at is None
    if taken.verdict == Verdict.GAVE_UP or (taken.verdict == Verdict.ALREADY_DONE and undelivered):
        # Finished but not delivered: the worker that drew it may have died before
        # sending the delivery. Delivery is idempotent, so make sure.
        return Outcome(ran=[job_id], deliver_only=True)
    if taken.held is None:
        return Outcome(ran=[])
    return Outcome(ran=[job_id], delivered=_draw_batch(rt, [taken.held]))


def _finished(raw: bytes | None) -> JobRecord | None:
    """The record ``raw`` when it is finished (done, failed, cancelled); None otherwise or unreadable."""
    if raw is None:
        return None
    try:
        record = JobRecord.model_validate_json(raw)
    except ValueError:
        return None
    return record if record.status.finished else None


@dataclass
class _BatchProgress:
    """The engines' progress callback for one batch: at most one record write per job every
    :data:`PROGRESS_WRITE_S` (which renews the job's lease and notices a cancel); asks the engine to
    stop only once every job of the batch was cancelled."""

    rt: Runtime
    live: set[str]
    # Start the throttle clock now: a one-pass engine (DF-GAN) then writes no progress at all, and
    # the finish overwrites the last report anyway.
    last_write: float = field(default_factory=time.monotonic)
    #: The batch's live previews (worker/previews.py): stored only when the records are written.
    previews: LivePreviews | None = None

    def for_engine(self, engine: str) -> Callable[[int, int], bool]:
        """The callback an engine gets: ``(step, total) -> stop?``, which also takes previews."""
        report = partial(self.report, engine)
        return report if self.previews is None else EngineProgress(report, self.previews)

    def report(self, engine: str, step: int, total: int) -> bool:
        """Write ``engine``'s progress into every live job; True when all were cancelled."""
        now = time.monotonic()
        if now - self.last_write < PROGRESS_WRITE_S:
            return False
        self.last_write = now
        keys = self.previews.keys_at(step, total) if self.previews is not None else {}
        for job_id in list(self.live):
            progress = Progress(engine=engine, step=step, total=total, preview_key=keys.get(job_id))
            try:
                record, hold = self.rt.jobs.renew(job_id, self.rt.settings.job_lease_s, progress=progress)
                conv = record.request.conversation
                publish(self.rt.redis, conv.platform, conv.chat_id, "progress", job_id)  # core/events.py
            except redis.RedisError as exc:
                # Redis is away: keep drawing (a progress report is not the job). The result is
                # written when it is back; if it stays away, the task fails and is redelivered.
                log.warning("progress of %s not written (Redis: %s)", job_id, exc)
                return False
            if hold == Hold.CANCELLED:
                self.live.discard(job_id)
        return not self.live


#: Per job: what each engine drew, as the record's results.
Drawn = dict[str, list[EngineResult]]


@dataclass
class _Pictures:
    """A batch's encoded pictures, kept until :func:`_finish_batch` stores them in the round trip
    that finishes the records (results are stored before, or with, "done"; never after)."""

    images: ImageStore
    blobs: dict[str, bytes] = field(default_factory=dict)

    def put(self, job_id: str, name: str, png: bytes) -> str:
        """Keep ``png`` as picture ``name`` of ``job_id``; returns the key it will have."""
        key = self.images.key(job_id, name)
        self.blobs[key] = png
        return key


def _draw_batch(rt: Runtime, batch: list[JobRecord], loaded: dict[str, Engine] | None = None) -> list[str]:
    """Draw ``batch`` (jobs that share engines, steps and size): one call per engine for the whole
    batch, each job with its own prompt and seeds; store every image and finish each record as done
    (delivering the jobs of local conversations in the same round trip). Returns the ids delivered.
    ``loaded``: the batch's engines as :func:`_load_engines` just got them (else they are got here).

    This is where the reliability promises meet the engines. Progress reports renew the jobs'
    leases and notice cancels: a job cancelled meanwhile is left as the cancel wrote it, and the
    engine stops once every job is cancelled. An engine failure fails the batch's jobs, not the
    worker. A Redis error propagates: the jobs stay running under their leases, the task is
    redelivered, and the jobs are taken over once their leases lapse.
    """
    previews = LivePreviews(rt.redis, [job.id for job in batch], rt.settings.preview_every)
    progress = _BatchProgress(rt, {job.id for job in batch}, previews=previews)
    drawn: Drawn = {job.id: [] for job in batch}
    pictures = _Pictures(rt.images)
    for engine_name in batch[0].request.engines:
        try:
            engine = (loaded or {}).get(engine_name)
            if engine is None:
                engine = rt.engines.get(engine_name, engine_model(batch[0].request, engine_name))
            version, images, seconds = _draw_with(
                rt, engine, engine_name, batch, progress.for_engine(engine_name)
            )
        except GenerationCancelled:
            for job in batch:
                rt.redis.zrem(PENDING_KEY, job.id)
            return []
        except redis.RedisError:
            raise  # not the engine's fault (see above)
        except Exception as exc:  # an engine failure fails these jobs, not the worker
            log.exception("engine %s failed on %s", engine_name, [job.id for job in batch])
            message = f"The {engine_name} engine failed: {type(exc).__name__}: {str(exc)[:200]}"
            for job in batch:
                rt.jobs.finish(job.id, JobStatus.FAILED, error=message)
            return []
        for job, job_images in zip(batch, images, strict=True):
            marks = result_marks(engine_name, job, job_images)
            result = EngineResult(
                engine=engine_name, version=version, seconds=seconds, image_keys=[], **marks
            )
            result.image_keys = [
                pictures.put(
                    job.id, f"{engine_name}-{i}", to_png(img, picture_parameters(job, result, i, img))
                )
                for i, img in enumerate(job_images)
            ]
            drawn[job.id].append(result)
    return _finish_batch(rt, [job for job in batch if job.id in progress.live], drawn, len(batch), pictures)


def _draw_with(
    rt: Runtime,
    engine: Engine,
    engine_name: str,
    batch: list[JobRecord],
    progress: Callable[[int, int], bool],
) -> tuple[str, list[list[Image.Image]], float]:
    """(engine version, images per job, seconds): ``batch`` drawn by ``engine`` (``engine_name``, of
    the batch's model: a batch shares its model) in one call."""
    uploads = UploadStore(rt.redis, rt.settings.result_ttl_s)
    requests = [generation_request(rt.settings, uploads, engine_name, job) for job in batch]
    started = time.perf_counter()
    images = engine.generate(requests, progress)
    return engine.info.version, images, time.perf_counter() - started


def _finish_batch(
    rt: Runtime, jobs: list[JobRecord], drawn: Drawn, batch_size: int, pictures: _Pictures
) -> list[str]:
    """Store the batch's pictures and finish each job's record as done, in one round trip: a record is
    written only while it is exactly as this worker's claim stored it (compare-and-set). One that
    changed meanwhile (a progress write, a cancel) is finished the careful way, where a cancel that
    raced the end wins (the cancel already told the conversation). The jobs share one ``batch_id``.
    The paired image is not composed here: whoever reads it first does (:mod:`core.pairs`).

    The same round trip delivers the jobs of local conversations (web, CLI: a Redis write each,
    :func:`worker.deliver.queue_local_delivery`), each only if its finish was written. Returns the ids
    delivered; the others go through the usual delivery."""
    batch_id = uuid.uuid4().hex[:16]
    fields: dict[str, dict[str, Any]] = {
        job.id: {
            "results": drawn[job.id],
            "pair_key": rt.images.key(job.id, PAIR),
            "batch_size": batch_size,
            "batch_id": batch_id,
        }
        for job in jobs
    }
    done = {job.id: ended_copy(job, JobStatus.DONE, **fields[job.id]) for job in jobs}
    swaps = [(job.id, job.model_dump_json(), done[job.id].model_dump_json()) for job in jobs]
    pipe = rt.redis.pipeline(transaction=False)
    for key, png in pictures.blobs.items():
        pipe.set(key, png, ex=rt.images.ttl_s)
    if swaps:
        rt.jobs.queue_swap(pipe, swaps)
    local = [job_id for job_id, _, new in swaps if queue_local_delivery(pipe, rt, done[job_id], new)]
    replies = pipe.execute()
    swap_at = len(pictures.blobs)
    for job, written in zip(jobs, swapped(replies[swap_at]) if swaps else [], strict=True):
        if not written:
            rt.jobs.finish(job.id, JobStatus.DONE, **fields[job.id])
    delivered = replies[swap_at + 1 :]
    return [job_id for job_id, reply in zip(local, delivered, strict=True) if local_delivered(reply)]
