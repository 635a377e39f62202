"""The queue client every front-end uses: submit, status (with queue position) and cancel."""

from __future__ import annotations

import secrets
import time

import redis
from celery import Celery
from kombu.exceptions import OperationalError

from core.errors import InputError, JobNotFound
from core.fair_queue import FairQueue, FairShare, JobWrite, Position, batch_key_of, conversation_key
from core.heartbeats import WorkerBeat, live_workers, refuse_unserved
from core.jobs import JobRecord, JobRequest, JobStatus
from core.limits import RateLimiter
from core.metrics import job_cancelled, job_rejected, job_submitted
from core.prompt_vocabulary import settle_auto_choice
from core.settings import Settings
from core.store import PENDING_KEY, History, ImageStore, JobStore, connect, job_key
from core.task_contract import DELIVER_TASK, GENERATE_TASK, QUEUE_DELIVERY, make_producer, model_queue

USER_JOBS_KEPT = 50
#: How long the live workers' heartbeats are reused for queue positions' estimates (seconds).
BEATS_CACHED_S = 1.0
QUEUE_UNAVAILABLE_TEXT = "The queue is unavailable right now. Please try again in a minute."
#: Errors that mean "Redis (the queue) cannot be reached", from redis-py and from Celery's producer.
UNAVAILABLE_ERRORS: tuple[type[BaseException], ...] = (redis.RedisError, OperationalError)


def user_jobs_key(user: str) -> str:
    """The list of ``user``'s recent job ids (the newest :data:`USER_JOBS_KEPT`), for ``/queue``."""
    return f"ib:userjobs:{user}"


class QueueUnavailable(redis.ConnectionError):
    """Redis (the queue) cannot be reached: the prompt was not queued.

    A :class:`redis.ConnectionError`, so every front-end's Redis-outage handling answers it (the web
    chat's JSON 503, the bots' error handlers); :attr:`message` is the text the user sees.
    """

    code = "queue_unavailable"
    message = QUEUE_UNAVAILABLE_TEXT
    retry_after = 60.0

    def __init__(self) -> None:
        super().__init__(QUEUE_UNAVAILABLE_TEXT)

    def as_input_error(self) -> InputError:
        """The same answer as an :class:`InputError`, for code that shows those."""
        return InputError(self.code, self.message, retry_after=self.retry_after)


class QueueClient:
    """Front-end side of the job queue. Cheap to create; holds a Redis client and a Celery producer."""

    def __init__(
        self, settings: Settings, client: redis.Redis | None = None, producer: Celery | None = None
    ) -> None:
        if not settings.redis_url:
            raise ValueError("settings.redis_url must be set (the embedded Redis sets it at start)")
        self.settings = settings
        self.redis = client or connect(settings.redis_url)
        self.producer = producer or make_producer(settings.redis_url)
        self.jobs = JobStore(self.redis, settings.result_ttl_s)
        self.images = ImageStore(self.redis, settings.result_ttl_s)
        self.history = History(self.redis, settings.result_ttl_s)
        self.rate_limiter = RateLimiter(self.redis, settings.rate_limit_jobs, settings.rate_limit_window_s)
        self.fair = FairQueue(self.redis, policy=FairShare.from_settings(settings))
        self._fairs = {self.fair.route: self.fair}
        self._beats: tuple[float, list[WorkerBeat]] | None = None

    def submit(self, request: JobRequest) -> JobRecord:
        """Queue a validated request. Raises :class:`InputError` for the rate limit or a full queue,
        and :class:`QueueUnavailable` when Redis (or the broker) cannot be reached."""
        try:
            return self._submit(request)
        except UNAVAILABLE_ERRORS as exc:
            raise QueueUnavailable() from exc

    def _submit(self, request: JobRequest) -> JobRecord:
        request = settle_auto_choice(self.settings, self.redis, request)
        record = JobRecord(
            request=request,
            seed=request.seed if request.seed is not None else secrets.randbelow(2**32),
            steps=request.steps if request.steps is not None else self.settings.default_steps,
            size=request.size if request.size is not None else self.settings.default_size,
        )
        # Admission (cap, shares, rate limit and the job's place in the fair order) writes the record
        # and the user's list in the same atomic step, then the task is sent: a worker never sees a
        # queued id whose record is missing, and a refused job leaves nothing behind.
        try:
            self._admit(record)
        except InputError as exc:
            job_rejected(exc.code)
            raise
        route = model_queue(request.model)
        self.producer.send_task(GENERATE_TASK, args=[record.id], kwargs={"route": route}, queue=route)
        job_submitted(request)
        return record

    def _admit(self, record: JobRecord) -> None:
        """Store ``record`` and give it its place in the fair order (:mod:`core.fair_queue`), in one
        round trip, or raise the :class:`InputError` of the limit it hits (and store nothing)."""
        request, settings = record.request, self.settings
        refuse_unserved(self.redis, request.model)
        self.fair_for(model_queue(request.model)).admit(
            record.id,
            user=request.user,
            conversation=conversation_key(request.conversation),
            lane=self.fair.lane_for(settings, request.user),
            batch=batch_key_of(record),
            created_at=record.created_at,
            max_depth=settings.max_queue_depth,
            rate_limit=settings.rate_limit_jobs,
            window_s=settings.rate_limit_window_s,
            write=JobWrite(
                record_key=job_key(record.id),
                record_json=record.model_dump_json(),
                ttl_s=settings.result_ttl_s,
                user_jobs_key=user_jobs_key(request.user),
                user_jobs_kept=USER_JOBS_KEPT,
            ),
        )

    def fair_for(self, route: str) -> FairQueue:
        """The fair queue of ``route`` (``gpu``, or ``gpu.<model>`` for another diffusion model)."""
        if route not in self._fairs:
            self._fairs[route] = FairQueue(self.redis, route, self.fair.policy)
        return self._fairs[route]

    def user_jobs(self, user: str, unfinished_only: bool = True) -> list[tuple[JobRecord, int | None]]:
        """``user``'s recent jobs (oldest first) with queue positions, for ``/queue``."""
        out = []
        for raw in self.redis.lrange(user_jobs_key(user), 0, -1):
            try:
                record, position = self.status(raw.decode())
            except JobNotFound:
                continue
            if not (unfinished_only and record.status.finished):
                out.append((record, position))
        return out

    def position(self, job_id: str, route: str | None = None) -> int | None:
        """1-based place in the fair order while waiting, else None: a :class:`~core.fair_queue.Position`,
        which also says how many wait and about how long until it is drawn."""
        placed = self.placement(job_id, route)
        if placed is not None:
            return placed
        rank = self.redis.zrank(PENDING_KEY, job_id)  # a job queued before the fair order existed
        return None if rank is None else int(rank) + 1

    def placement(self, job_id: str, route: str | None = None) -> Position | None:
        """Where a waiting job stands: position of how many, and about how long until it is drawn
        (from the measured job times and the live workers serving its queue). ``route``: the job's
        queue when the caller knows it (else read from the record)."""
        if route is None:
            try:
                route = model_queue(self.jobs.get(job_id).request.model)
            except JobNotFound:
                return None
        workers = sum(1 for beat in self._live_workers() if route in beat.queues)
        return self.fair_for(route).placement(job_id, workers=workers)

    def _live_workers(self) -> list[WorkerBeat]:
        """The live workers' heartbeats, read at most once every :data:`BEATS_CACHED_S` (positions are
        asked for often: every queued answer, every status poll). "None alive" is not kept: a worker
        that starts is counted at once."""
        now = time.monotonic()
        if self._beats is None or now - self._beats[0] > BEATS_CACHED_S:
            beats = live_workers(self.redis)
            self._beats = (now, beats) if beats else None
            return beats
        return self._beats[1]

    def status(self, job_id: str) -> tuple[JobRecord, int | None]:
        """The job record and its queue position. Raises :class:`~core.errors.JobNotFound`."""
        record = self.jobs.get(job_id)
        return record, self.position(job_id, model_queue(record.request.model))

    def cancel(self, job_id: str, user: str | None = None) -> JobRecord:
        """Cancel a waiting or running job. ``user`` (when given) must own it."""

        def change(record: JobRecord) -> JobRecord:
            if user is not None and record.request.user != user:
                raise InputError("not_your_job", "You can only cancel your own jobs.")
            if record.status.finished:
                raise InputError("already_finished", f"That job is already {record.status.value}.")
            record.status = JobStatus.CANCELLED
            record.finished_at = time.time()
            return record

        record = self.jobs.update(job_id, change)
        job_cancelled(record)
        self.fair_for(model_queue(record.request.model)).remove(job_id)
        # Tell the conversation; the generate task skips cancelled jobs when it gets to them.
        self.producer.send_task(DELIVER_TASK, args=[job_id], queue=QUEUE_DELIVERY)
        return record

    def wait(self, job_id: str, timeout_s: float = 300.0, delivered: bool = True) -> JobRecord:
        """Block until the job is finished (and delivered, when asked). For the CLI and scripts."""
        deadline = time.monotonic() + timeout_s
        delay = 0.01
        while True:
            record = self.jobs.get(job_id)
            if record.status.finished and (not delivered or record.delivered_at is not None):
                return record
            if time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} still {record.status.value} after {timeout_s} s")
            time.sleep(delay)
            delay = min(delay * 1.5, 0.25)
