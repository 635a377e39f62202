"""The body of the ``deliver`` task: post a job's outcome into its conversation exactly once.

Three things make that hold when workers die and platforms time out (docs/reliability.md):

- **A lease per job** (``ib:delivering:<job>``, a token with a TTL), refreshed by a background thread
  while the send runs. A delivery that finds it held raises :class:`DeliveryLocked`: the task retries
  once the lease can have lapsed, so a lease left by a dead worker leads to a retry, never to an ack.
- **A journal per job** (``ib:delivery:<job>``, a hash): ``sending`` is written before the platform is
  called, ``sent`` when the request has fully left (senders with ``REPORTS_SENT``), ``posted`` /
  ``unconfirmed`` / ``failed`` after. A retry that finds ``sent`` (or ``sending`` from a sender that
  cannot tell) knows an earlier send's outcome is unknown (timeout, or a worker killed mid-send) and
  passes ``unconfirmed=True`` to the sender, which then never posts the result a second time blindly.
  ``sending`` from a sender that reports ``sent`` means the request never fully left: sent again.
- **One sender per chat at a time**, paced to the platform's per-chat limit, so concurrent delivery
  threads keep each chat's results in order and under its rate limit.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import redis

from bots.web.send import result_event
from core.delivery import (
    POSTED,
    DeliveryAmbiguous,
    DeliveryContext,
    DeliveryFailed,
    DeliveryLocked,
    DeliveryRetry,
    Notice,
)
from core.errors import JobNotFound
from core.events import channel, nudge_message
from core.jobs import JobRecord, JobStatus
from core.leases import KeyLease, swapped
from core.store import HISTORY_LIMIT, History, job_key
from worker.outbox import outbox_for, tell
from worker.runtime import Runtime

log = logging.getLogger(__name__)

#: Longest delivery lease; shorter when the job lease is (tests). Refreshed every third of it.
LOCK_S = 30.0
MIN_LOCK_S = 3.0
#: Sends the journal allows per job (each platform call counts) before the job is given up.
MAX_SEND_ATTEMPTS = 8
#: Gap between two messages to one chat: Telegram allows about 1/s in a private chat and 20/min in a
#: group (negative chat ids); Discord's per-channel bucket is 5 per 5 s.
CHAT_GAP_S = {"telegram": 1.0, "telegram-group": 3.0, "discord": 1.0}
#: How long a delivery waits for another one to the same chat before it retries later instead.
CHAT_WAIT_S = 5.0

#: Set of job ids whose delivery started and has not ended (delivered or given up): what a starting
#: delivery worker sweeps.
OPEN_KEY = "ib:delivery-open"
# Journal states.
SENDING = "sending"  # a send started; its request may not have fully left yet
SENT = "sent"  # the request fully left, no answer yet: the platform may have posted it
UNCONFIRMED = "unconfirmed"
FAILED = "failed"
#: Conversations whose delivery is only a Redis write (the web chat's history; nothing for the CLI,
#: which reads the record): the generate task delivers them itself, without the ``deliver`` task.
LOCAL_PLATFORMS = ("web", "cli")

# A local conversation's delivery as one atomic step (see queue_local_delivery).
# KEYS: job record, delivery lease, journal, history, told set.
# ARGV: the record's JSON as the caller stored it, the same delivered, record TTL, history TTL, history
#       limit, the history event's JSON ('' for none), job id, events channel, nudge, now, outcome.
# Returns 1 when delivered; 0 (nothing written) while a delivery holds the job's lease or when the
# record changed since the caller stored it: the careful path (run_deliver) then decides.
_DELIVER_LOCAL = """
if redis.call('EXISTS', KEYS[2]) == 1 then return 0 end
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
if ARGV[6] ~= '' then
  local told = false
  if redis.call('EXISTS', KEYS[5]) == 1 then
    told = redis.call('SISMEMBER', KEYS[5], ARGV[7]) == 1
  else
    -- a history written before the told set existed: look through it (History.told does the same)
    for _, raw in ipairs(redis.call('LRANGE', KEYS[4], 0, -1)) do
      local ok, event = pcall(cjson.decode, raw)
      if ok and type(event) == 'table' and event.role == 'bot' and event.job_id == ARGV[7] then
        told = true
        break
      end
    end
  end
  if not told then
    redis.call('RPUSH', KEYS[4], ARGV[6])
    redis.call('LTRIM', KEYS[4], -tonumber(ARGV[5]), -1)
    redis.call('EXPIRE', KEYS[4], ARGV[4])
    redis.call('SADD', KEYS[5], ARGV[7])
    redis.call('EXPIRE', KEYS[5], ARGV[4])
    redis.call('PUBLISH', ARGV[8], ARGV[9])
  end
end
redis.call('HINCRBY', KEYS[3], 'attempts', 1)
redis.call('HSET', KEYS[3], 'state', ARGV[11], 'started_at', ARGV[10], 'finished_at', ARGV[10])
redis.call('EXPIRE', KEYS[3], ARGV[4])
redis.call('SET', KEYS[1], ARGV[2], 'EX', ARGV[3])
return 1
"""


def lock_key(job_id: str) -> str:
    """The delivery lease of ``job_id``."""
    return f"ib:delivering:{job_id}"


def journal_key(job_id: str) -> str:
    """The delivery journal of ``job_id`` (a hash: state, attempts, started_at, outcome...)."""
    return f"ib:delivery:{job_id}"


def lease_seconds(rt: Runtime) -> float:
    """Length of a delivery lease for this worker's settings."""
    return max(MIN_LOCK_S, min(LOCK_S, rt.settings.job_lease_s))


class Lease(KeyLease):
    """A :class:`~core.leases.KeyLease` with a fresh token, renewed by a daemon thread from
    :meth:`acquire` until :meth:`release` (unless ``renewed`` is False: for work that ends well
    within one lease, like an inline delivery that only writes to Redis)."""

    def __init__(self, client: redis.Redis, key: str, seconds: float, renewed: bool = True) -> None:
        super().__init__(client, key, uuid.uuid4().hex, seconds)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.renewed = renewed
        self.lost = False

    def acquire(self) -> bool:
        """Take the key if free; starts renewing it."""
        if not super().acquire():
            return False
        self._start_renewing()
        return True

    def acquire_reading(self, guarded: str) -> tuple[bool, bytes | None]:
        """:meth:`acquire`, also reading ``guarded`` under the lease (one round trip)."""
        taken, value = super().acquire_reading(guarded)
        if taken:
            self._start_renewing()
        return taken, value

    def _start_renewing(self) -> None:
        if self.renewed:
            self._thread = threading.Thread(target=self._keep, name=f"lease:{self.key}", daemon=True)
            self._thread.start()

    def _keep(self) -> None:
        while not self._stop.wait(self.ms / 3000):
            try:
                if not self.renew():
                    self.lost = True
                    log.warning("lease %s lapsed while held", self.key)
                    return
            except redis.RedisError as exc:  # keep trying: the TTL still covers two more rounds
                log.warning("could not refresh lease %s: %s", self.key, exc)

    def release(self) -> None:
        """Stop renewing and delete the key if it is still ours."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        try:
            super().release()
        except redis.RedisError as exc:  # it lapses by itself
            log.warning("could not release lease %s: %s", self.key, exc)


def run_deliver(rt: Runtime, job_id: str, record: JobRecord | None = None) -> str:
    """Deliver ``job_id`` unless already delivered. Returns what happened (for logs and tests).

    ``record``: the job as the caller just read it, for an inline delivery right after the draw
    (a local conversation: Redis writes only, so its lease is not renewed by a thread).

    Raises :class:`DeliveryLocked` while another delivery holds the job's lease (the task retries when
    it can have lapsed), :class:`core.delivery.DeliveryRetry` / :class:`DeliveryAmbiguous` when the
    platform says "later" or did not answer, :class:`DeliveryFailed` when it refuses for good.
    """
    inline = record is not None
    record = record or rt.jobs.get(job_id)
    if record.delivered_at is not None:
        return "already-delivered"
    if not record.status.finished:
        return "not-finished"
    lease = Lease(rt.redis, lock_key(job_id), lease_seconds(rt), renewed=not inline)
    taken, raw = lease.acquire_reading(job_key(job_id))  # and re-read the job under the lease
    if not taken:
        raise DeliveryLocked(f"job {job_id} is being delivered", retry_after=lease.remaining_s() + 0.5)
    try:
        if raw is None:
            raise JobNotFound(job_id)
        record = JobRecord.model_validate_json(raw)
        if record.delivered_at is not None:
            return "already-delivered"
        journal = _open_journal(rt, job_id)
        with _chat_turn(rt, record):
            return _send_once(rt, record, raw, journal)
    finally:
        lease.release()


def _open_journal(rt: Runtime, job_id: str) -> dict[str, str]:
    """Start the job's journal (if it has none) and list the job as open, in one round trip; returns
    the journal. A journal from the start, so that a worker killed while waiting for its chat's turn
    leaves a trace for the sweep of a delivery worker that starts later (see :func:`sweep`)."""
    key = journal_key(job_id)
    pipe = rt.redis.pipeline(transaction=False)
    pipe.hsetnx(key, "state", "waiting")
    pipe.expire(key, rt.settings.result_ttl_s)
    pipe.sadd(OPEN_KEY, job_id)
    pipe.hgetall(key)
    raw = pipe.execute()[-1]
    return {k.decode(): v.decode() for k, v in raw.items()}


def _send_once(rt: Runtime, record: JobRecord, raw: bytes, journal: dict[str, str]) -> str:
    outbox = outbox_for(record.request.conversation.platform)
    attempts = int(journal.get("attempts", 0))
    if attempts >= MAX_SEND_ATTEMPTS:
        raise DeliveryFailed(f"gave up after {attempts} send attempts")
    reports_sent = bool(outbox.REPORTS_SENT)
    state = journal.get("state")
    # "sending" left by a dead attempt: with a sender that reports when its request has fully left,
    # it means the request never did (nothing can have been posted); with another, it may have.
    unconfirmed = state in (SENT, UNCONFIRMED) or (state == SENDING and not reports_sent)
    key = journal_key(record.id)
    pipe = rt.redis.pipeline(transaction=False)
    pipe.hset(key, mapping={"state": SENDING, "attempts": attempts + 1, "started_at": time.time()})
    pipe.expire(key, rt.settings.result_ttl_s)
    pipe.execute()
    left = threading.Event()

    def on_sent() -> None:
        left.set()
        try:
            rt.redis.hset(key, "state", SENT)
        except redis.RedisError as exc:  # the journal then errs towards sending again
            log.warning("job %s: could not journal a sent request: %s", record.id, exc)

    ctx = DeliveryContext(
        settings=rt.settings,
        images=rt.images,
        history=rt.history,
        unconfirmed=unconfirmed,
        on_sent=on_sent if reports_sent else None,
    )
    try:
        outcome = outbox.send(record, ctx) or POSTED
    except DeliveryAmbiguous as exc:
        if reports_sent and not left.is_set():  # it never fully left: a plain retry is safe
            rt.redis.hset(key, "state", UNCONFIRMED if unconfirmed else "retry")
            raise DeliveryRetry(f"{exc} (the request never fully left)") from exc
        rt.redis.hset(key, "state", UNCONFIRMED)  # the next try resolves it
        raise
    except Exception:
        # Definite: nothing was posted by this attempt. An earlier unconfirmed one stays unconfirmed.
        rt.redis.hset(key, "state", UNCONFIRMED if unconfirmed else "retry")
        raise
    _close(rt, record, raw, outcome)
    return "delivered" if outcome == POSTED else outcome


def _close(rt: Runtime, record: JobRecord, raw: bytes, outcome: str) -> None:
    """After a send: journal the outcome, mark the job delivered and no longer open, in one round trip
    (the record is written only if it is still as read under the lease; else updated the careful way)."""
    delivered = record.model_copy(update={"delivered_at": time.time()}).model_dump_json()
    pipe = rt.redis.pipeline(transaction=False)
    pipe.hset(journal_key(record.id), mapping={"state": outcome, "finished_at": time.time()})
    rt.jobs.queue_swap(pipe, [(record.id, raw, delivered)])
    pipe.srem(OPEN_KEY, record.id)
    if not swapped(pipe.execute()[1])[0]:
        rt.jobs.update(record.id, _mark_delivered)


def queue_local_delivery(pipe: redis.client.Pipeline, rt: Runtime, record: JobRecord, stored: str) -> bool:
    """Add the delivery of a finished job of a local conversation (:data:`LOCAL_PLATFORMS`) to
    ``pipe``, a pipeline the worker sends anyway (the one that finishes the job); False, with nothing
    added, for any other platform.

    ``stored``: the record's JSON as this pipeline writes it (``record`` finished). The delivery is one
    atomic script: it appends the result to the web conversation's history unless it is there already
    (with the told set and the nudge, as :meth:`core.store.History.append`), journals it and marks the
    job delivered. Being one step, it needs no lease and leaves nothing half done for :func:`sweep`.
    It writes nothing while a delivery holds the job's lease, or once the record is no longer
    ``stored`` (a cancel raced the finish): its reply (read with :func:`local_delivered`) is then 0,
    and the job goes the careful way (:func:`run_deliver`)."""
    conv = record.request.conversation
    if conv.platform not in LOCAL_PLATFORMS:
        return False
    now = time.time()
    delivered = record.model_copy(update={"delivered_at": now}).model_dump_json()
    event = json.dumps({"ts": now, **result_event(record)}) if conv.platform == "web" else ""
    keys = [
        job_key(record.id),
        lock_key(record.id),
        journal_key(record.id),
        History.key(conv.platform, conv.chat_id),
        History.told_key(conv.platform, conv.chat_id),
    ]
    args = [
        stored,
        delivered,
        rt.jobs.ttl_s,
        rt.history.ttl_s,
        HISTORY_LIMIT,
        event,
        record.id,
        channel(conv.platform, conv.chat_id),
        nudge_message("history", record.id),
        now,
        POSTED,
    ]
    pipe.eval(_DELIVER_LOCAL, len(keys), *keys, *args)
    return True


def local_delivered(reply: object) -> bool:
    """Whether :func:`queue_local_delivery`'s script delivered the job (its reply in the pipeline)."""
    return bool(int(reply))  # type: ignore[call-overload]


def sweep(rt: Runtime) -> list[str]:
    """Deliveries that a dead worker may have left unfinished: journal started, job not delivered.

    A delivery worker runs this when it starts, and sends a ``deliver`` task for each, so a post
    interrupted by a killed worker comes back in seconds instead of after the broker's visibility
    timeout (an hour by default). A second copy of a task is harmless: the lease and the journal
    make delivery idempotent. Returns the job ids it re-queued.
    """
    from core.task_contract import DELIVER_TASK, QUEUE_DELIVERY

    found = []
    for raw in rt.redis.smembers(OPEN_KEY):
        job_id = raw.decode() if isinstance(raw, bytes) else str(raw)
        try:
            record = rt.jobs.get(job_id)
        except Exception:  # noqa: BLE001 - expired or unreadable: nothing to deliver
            rt.redis.srem(OPEN_KEY, job_id)
            continue
        if record.delivered_at is not None:
            rt.redis.srem(OPEN_KEY, job_id)
        elif record.status.finished:
            # A lease still held (its worker alive, or dead moments ago): look once it can have lapsed.
            held_ms = rt.redis.pttl(lock_key(job_id))
            countdown = max(0.0, held_ms / 1000) + 0.5 if held_ms and held_ms > 0 else 0.0
            rt.app.send_task(DELIVER_TASK, args=[job_id], queue=QUEUE_DELIVERY, countdown=countdown)
            found.append(job_id)
    if found:
        log.warning("re-queued %d deliveries left unfinished by a stopped worker", len(found))
    return found


def journal_of(rt: Runtime, job_id: str) -> dict[str, str]:
    """The delivery journal of ``job_id`` as text fields (empty before the first send)."""
    raw = rt.redis.hgetall(journal_key(job_id))
    return {k.decode(): v.decode() for k, v in raw.items()}


@contextmanager
def _chat_turn(rt: Runtime, record: JobRecord) -> Iterator[None]:
    """Hold the conversation's send slot (one delivery per chat at a time, paced to its limit)."""
    conv = record.request.conversation
    platform = conv.platform
    if platform not in CHAT_GAP_S:
        yield
        return
    gap = CHAT_GAP_S["telegram-group"] if platform == "telegram" and conv.chat_id.startswith("-") else 0.0
    gap = gap or CHAT_GAP_S[platform]
    chat = f"{platform}:{conv.chat_id}"
    lease = Lease(rt.redis, f"ib:chatsend:{chat}", lease_seconds(rt))
    deadline = time.monotonic() + CHAT_WAIT_S
    while not lease.acquire():
        if time.monotonic() > deadline:
            raise DeliveryLocked(f"chat {chat} is busy", retry_after=1.0)
        time.sleep(0.05)
    try:
        next_at = rt.redis.get(f"ib:chatnext:{chat}")
        wait = float(next_at) - time.time() if next_at else 0.0
        if wait > 0:
            time.sleep(min(wait, gap))
        yield
    finally:
        rt.redis.set(f"ib:chatnext:{chat}", time.time() + gap, ex=60)
        lease.release()


def give_up(rt: Runtime, job_id: str, reason: str) -> str:
    """End a delivery that ran out of retries: the job is marked failed, and the conversation is told
    (best effort: the platform may still be refusing). Returns ``"failed"``."""
    from core.delivery import delivery_failed_text

    journal = journal_of(rt, job_id)
    attempts = int(journal.get("attempts", 0))
    rt.redis.hset(journal_key(job_id), mapping={"state": FAILED, "reason": reason[:300]})
    rt.redis.srem(OPEN_KEY, job_id)
    record = rt.jobs.get(job_id)
    text = delivery_failed_text(record, attempts)

    def fail(r: JobRecord) -> JobRecord:
        if r.delivered_at is None:
            r.status = JobStatus.FAILED
            r.error = text
            r.delivered_at = time.time()
        return r

    record = rt.jobs.update(job_id, fail)
    # Best effort: the platform is what failed.
    tell(rt, record.request.conversation, Notice(text, job_id=record.id))
    return "failed"


def _mark_delivered(record: JobRecord) -> JobRecord:
    record.delivered_at = time.time()
    return record
