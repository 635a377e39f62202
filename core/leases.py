"""Leased records: a JSON record in Redis that one worker at a time holds, by a lease in the record.

Image jobs (:class:`core.store.JobStore`) and training runs (:class:`core.train_runs.TrainRunStore`)
share this machinery. A worker *claims* a waiting record (or one whose holder's lease lapsed) with a
compare-and-set, *renews* the lease while it works (the renewal also tells it when the record was
cancelled or taken over), and *finishes* it only while it still holds it. None of this trusts the
broker to deliver a task exactly once: a duplicate or late message finds the record held or finished
and does nothing.

Every change is an optimistic WATCH/MULTI read-modify-write (:func:`update_record`), except on the
image worker's hot path: there records are claimed and finished in batches by compare-and-set
against the exact JSON last read or written (:meth:`LeasedStore.claim_many`,
:meth:`LeasedStore.queue_swap`), one round trip for a batch and no retries; a record that changed in
between (a cancel, a progress write) falls back to the optimistic path, where the same rules decide.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Generic, TypeVar

import redis
from pydantic import BaseModel

from core.jobs import JobStatus

RecordT = TypeVar("RecordT", bound=BaseModel)


#: A leased record: a pydantic model with the fields ``id``, ``status`` (a :class:`JobStatus`),
#: ``worker``, ``lease_until``, ``attempts``, ``started_at``, ``finished_at`` and ``error``
#: (:class:`~core.jobs.JobRecord`, :class:`~core.train_runs.TrainRun`).
LeasedT = TypeVar("LeasedT", bound=BaseModel)


def update_record(
    client: redis.Redis,
    key: str,
    model: type[RecordT],
    change: Callable[[RecordT], RecordT | None],
    ttl_s: int,
    missing: Callable[[], Exception],
) -> RecordT:
    """Read the JSON record at ``key``, apply ``change``, write it back, atomically.

    Optimistic WATCH/MULTI, retried on conflict, so concurrent writers (a worker's progress and a
    user's cancel) never lose each other's update. ``change`` mutates in place or returns a
    replacement; ``missing()`` is raised when the key does not exist.
    """
    while True:
        with client.pipeline() as pipe:
            try:
                pipe.watch(key)
                raw = pipe.get(key)
                if raw is None:
                    raise missing()
                record = model.model_validate_json(raw)
                new = change(record) or record
                pipe.multi()
                pipe.set(key, new.model_dump_json(), ex=ttl_s)
                pipe.execute()
                return new
            except redis.WatchError:
                continue


class Verdict(StrEnum):
    """What a claim found."""

    CLAIMED = "claimed"  # the caller holds the record now
    HELD_BY_OTHER = "held"  # another worker's lease is live
    ALREADY_DONE = "finished"  # done, failed or cancelled (the record says which)
    GAVE_UP = "gave_up"  # too many attempts: the claim failed the record instead
    MISSING = "missing"  # no such record (never existed, or expired)


class Hold(StrEnum):
    """What a lease renewal found."""

    RENEWED = "renewed"  # still ours and running; the lease is extended
    CANCELLED = "cancelled"  # someone cancelled it: stop
    LOST = "lost"  # another worker took it over: stop, and touch nothing of it
    ENDED = "ended"  # it is finished already (by us a moment ago, or by a claim that gave up)


@dataclass(frozen=True)
class Claim(Generic[LeasedT]):
    """A claim's verdict and the record as it now stands (None only when it is missing)."""

    verdict: Verdict
    record: LeasedT | None

    @property
    def held(self) -> LeasedT | None:
        """The record when the caller now holds it, else None."""
        return self.record if self.verdict == Verdict.CLAIMED else None

    def recheck_in(self, now: float | None = None) -> float:
        """Seconds until a lease held by another worker can have lapsed (at least 1)."""
        lease_until = getattr(self.record, "lease_until", None) or 0.0
        return max(1.0, lease_until - (now or time.time()) + 1.0)


# KEYS: record keys.  ARGV: TTL, then (old JSON, new JSON) per key.  Sets each key to its new JSON
# only while it still holds its old JSON; returns 1 or 0 per key.
_SWAP = """
local out = {}
for i = 1, #KEYS do
  if redis.call('GET', KEYS[i]) == ARGV[2 * i] then
    redis.call('SET', KEYS[i], ARGV[2 * i + 1], 'EX', ARGV[1])
    out[i] = 1
  else
    out[i] = 0
  end
end
return out
"""


def swapped(reply: list[int]) -> list[bool]:
    """The compare-and-set script's reply (:meth:`LeasedStore.queue_swap`): written, per record."""
    return [bool(int(flag)) for flag in reply]


def _lease_live(record: Any, now: float) -> bool:
    return bool(record.status == JobStatus.RUNNING and (record.lease_until or 0) > now)


class LeasedStore(Generic[LeasedT]):
    """Reads, atomically updates, claims, renews and finishes one kind of leased record.

    A subclass names its record type (:attr:`model`), its key prefix, its not-found error (raised
    with the id) and the error a record gets when its claims give up.
    """

    model: type[LeasedT]
    prefix: str = ""
    missing: type[Exception] = KeyError
    gave_up_error = "Gave up after {n} attempts: the worker kept stopping."

    def __init__(self, client: redis.Redis, ttl_s: int) -> None:
        self.redis = client
        self.ttl_s = ttl_s

    # --- plain records ---

    def key(self, record_id: str) -> str:
        """Key of a record."""
        return f"{self.prefix}{record_id}"

    def valid_id(self, record_id: str) -> bool:
        """Whether ``record_id`` can name a record (a subclass may check its shape)."""
        return True

    def save(self, record: LeasedT) -> None:
        """Write the whole record."""
        self.redis.set(self.key(record.id), record.model_dump_json(), ex=self.ttl_s)  # type: ignore[attr-defined]

    def get(self, record_id: str) -> LeasedT:
        """The record of ``record_id``; raises :attr:`missing`."""
        raw = self.redis.get(self.key(record_id)) if self.valid_id(record_id) else None
        if raw is None:
            raise self.missing(record_id)
        return self.model.model_validate_json(raw)

    def update(self, record_id: str, change: Callable[[LeasedT], LeasedT | None]) -> LeasedT:
        """Apply ``change`` atomically (optimistic WATCH/MULTI; retried on conflict).

        ``change`` mutates the record in place or returns a replacement; returning the record
        unchanged is fine. Returns the stored result.
        """
        if not self.valid_id(record_id):
            raise self.missing(record_id)
        return update_record(
            self.redis,
            self.key(record_id),
            self.model,
            change,
            self.ttl_s,
            lambda: self.missing(record_id),
        )

    # --- the lease ---

    def claim(
        self,
        record_id: str,
        worker: str,
        lease_s: float,
        max_attempts: int,
        on_claim: Callable[[LeasedT], None] | None = None,
    ) -> Claim[LeasedT]:
        """Take ``record_id`` for ``worker`` when it waits, or when its holder's lease lapsed.

        A record claimed ``max_attempts`` times already is failed instead (:attr:`Verdict.GAVE_UP`):
        its workers keep dying on it. ``on_claim`` adjusts a record being claimed (same write).
        """
        now = time.time()
        try:
            current = self.get(record_id)  # cheap read first: most late duplicates end here, no write
        except self.missing:
            return Claim(Verdict.MISSING, None)
        early = self._refusal(current, now)
        if early is not None:
            return Claim(early, current)
        verdict = [Verdict.CLAIMED]

        def change(record: Any) -> Any:
            verdict[0] = self._take(record, now, worker, lease_s, max_attempts)
            if verdict[0] == Verdict.CLAIMED and on_claim is not None:
                on_claim(record)
            return record

        try:
            record = self.update(record_id, change)
        except self.missing:
            return Claim(Verdict.MISSING, None)
        return Claim(verdict[0], record)

    def claim_many(
        self,
        raws: dict[str, bytes | None],
        worker: str,
        lease_s: float,
        max_attempts: int,
        also: Callable[[Any], None] | None = None,
    ) -> list[Claim[LeasedT]]:
        """:meth:`claim` for several records at once, given their stored JSON as just read (the fair
        queue's claim script returns it with the ids it takes): the claims are written in one round
        trip, each only if its record is still exactly as read (no WATCH retries). A record that
        changed in between (a cancel raced the claim) is claimed again the careful way. Each claim
        that wrote holds the record exactly as stored (its ``model_dump_json()`` is the stored JSON):
        the holder's finish can be a compare-and-set against it too (:meth:`queue_swap`,
        :func:`ended_copy`). ``also`` adds commands to the claims' round trip (the fair queue's confirm)."""
        now = time.time()
        claims: dict[str, Claim[LeasedT]] = {}
        swaps: list[tuple[str, bytes | str, str]] = []
        for record_id, raw in raws.items():
            if raw is None:
                claims[record_id] = Claim(Verdict.MISSING, None)
                continue
            record = self.model.model_validate_json(raw)
            verdict = self._take(record, now, worker, lease_s, max_attempts)
            if verdict in (Verdict.CLAIMED, Verdict.GAVE_UP):
                swaps.append((record_id, raw, record.model_dump_json()))
            claims[record_id] = Claim(verdict, record)
        pipe = self.redis.pipeline(transaction=False)
        if swaps:
            self.queue_swap(pipe, swaps)
        if also is not None:
            also(pipe)
        replies = pipe.execute()
        for (record_id, _, _), written in zip(swaps, swapped(replies[0]) if swaps else [], strict=True):
            if not written:  # it changed since it was read: decide again on what it is now
                claims[record_id] = self.claim(record_id, worker, lease_s, max_attempts)
        return [claims[record_id] for record_id in raws]

    def _take(self, record: Any, now: float, worker: str, lease_s: float, max_attempts: int) -> Verdict:
        """A claim's change of ``record`` (in place) and its verdict."""
        refusal = self._refusal(record, now)
        if refusal is not None:
            return refusal
        if record.attempts >= max_attempts:
            record.status = JobStatus.FAILED
            record.error = self.gave_up_error.format(n=max_attempts)
            record.finished_at = now
            return Verdict.GAVE_UP
        record.status = JobStatus.RUNNING
        record.started_at = record.started_at or now
        record.worker = worker
        record.lease_until = now + lease_s
        record.attempts += 1
        return Verdict.CLAIMED

    # --- compare-and-set writes (one round trip for many records) ---

    def swap(self, swaps: list[tuple[str, bytes | str, str]]) -> list[bool]:
        """Write each ``(id, old JSON, new JSON)`` only where the record is still exactly ``old``;
        one round trip. Returns, per entry, whether it was written."""
        if not swaps:
            return []
        pipe = self.redis.pipeline(transaction=False)
        self.queue_swap(pipe, swaps)
        return swapped(pipe.execute()[-1])

    def queue_swap(self, pipe: Any, swaps: list[tuple[str, bytes | str, str]]) -> None:
        """Add :meth:`swap`'s script to ``pipe`` (a pipeline): its reply, read with :func:`swapped`,
        says which were written."""
        args: list[bytes | str | int] = [self.ttl_s]
        for _, old, new in swaps:
            args += [old, new]
        pipe.eval(_SWAP, len(swaps), *[self.key(record_id) for record_id, _, _ in swaps], *args)

    @staticmethod
    def _refusal(record: Any, now: float) -> Verdict | None:
        if record.status.finished:
            return Verdict.ALREADY_DONE
        if _lease_live(record, now):
            return Verdict.HELD_BY_OTHER
        return None

    def renew(
        self, record_id: str, lease_s: float, owner: str | None = None, **fields: Any
    ) -> tuple[LeasedT, Hold]:
        """Extend the lease of a running record and write ``fields`` into it, in one write.

        With ``owner``, only while ``owner`` still holds it (else :attr:`Hold.LOST`). Returns the
        stored record and what the renewal found; the record changes only when it is ``RENEWED``.
        """
        found = [Hold.RENEWED]

        def change(record: Any) -> Any:
            if record.status == JobStatus.CANCELLED:
                found[0] = Hold.CANCELLED
            elif owner is not None and record.worker != owner:
                found[0] = Hold.LOST
            elif record.status != JobStatus.RUNNING:
                found[0] = Hold.ENDED
            else:
                found[0] = Hold.RENEWED
                record.lease_until = time.time() + lease_s
                for name, value in fields.items():
                    setattr(record, name, value)
            return record

        record = self.update(record_id, change)
        return record, found[0]

    def finish(
        self, record_id: str, status: JobStatus, owner: str | None = None, **fields: Any
    ) -> LeasedT | None:
        """End a running record with ``status`` and ``fields``; the lease is cleared.

        Only a record still running (and, with ``owner``, still held by ``owner``) is finished: a
        cancel that raced the end of the work wins, and a worker that lost the record leaves it to
        its new holder. Returns the stored record, or None when it was not finished by this call.
        """
        ended = [False]

        def change(record: Any) -> Any:  # may run again on a conflict: decides afresh each time
            ended[0] = False
            if record.status != JobStatus.RUNNING or (owner is not None and record.worker != owner):
                return record
            ended[0] = True
            return ended_copy(record, status, **fields)

        record = self.update(record_id, change)
        return record if ended[0] else None

    def give_back(self, record_id: str, owner: str, **fields: Any) -> LeasedT:
        """Return a record ``owner`` claimed to the waiting state (with ``fields``); the attempt does
        not count."""

        def change(record: Any) -> Any:
            if record.status == JobStatus.RUNNING and record.worker == owner:
                record.status = JobStatus.QUEUED
                record.lease_until = None
                record.attempts = max(0, record.attempts - 1)
                for name, value in fields.items():
                    setattr(record, name, value)
            return record

        return self.update(record_id, change)


def ended_copy(record: LeasedT, status: JobStatus, **fields: Any) -> LeasedT:
    """A copy of running ``record`` ended with ``status`` and ``fields``, its lease cleared (what
    :meth:`LeasedStore.finish` writes; a worker that holds the record writes it with
    :meth:`LeasedStore.queue_swap`, against the JSON it stored itself)."""
    changes = {"status": status, "finished_at": time.time(), "lease_until": None, **fields}
    return record.model_copy(update=changes)


# A key lease is taken when the key is free or already holds our token, and renewed or released only
# while it holds our token: a lapsed lease taken over by another holder is never extended or deleted
# by the one that lost it.
_TAKE = "local v = redis.call('GET', KEYS[1]) if v == false or v == ARGV[1] then " \
    "redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2]) return 1 end return 0"  # fmt: skip
# The same, and then the value of KEYS[2] (the record the lease guards) in the same round trip.
_TAKE_READING = "local v = redis.call('GET', KEYS[1]) if v == false or v == ARGV[1] then " \
    "redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2]) return {1, redis.call('GET', KEYS[2])} end " \
    "return {0}"  # fmt: skip
_RENEW = "if redis.call('GET', KEYS[1]) == ARGV[1] then " \
    "return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end return 0"  # fmt: skip
_RELEASE = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0"


class KeyLease:
    """A Redis key held by a token, with a TTL: a lock that lapses when its holder dies.

    For what has no record of its own: a job's delivery, a chat's send slot, the one training lock.
    """

    def __init__(self, client: redis.Redis, key: str, token: str, seconds: float) -> None:
        self.redis = client
        self.key = key
        self.token = token
        self.ms = int(seconds * 1000)

    def acquire(self) -> bool:
        """Take the key when it is free or already ours (a previous attempt with the same token)."""
        return bool(self.redis.eval(_TAKE, 1, self.key, self.token, self.ms))

    def acquire_reading(self, guarded: str) -> tuple[bool, bytes | None]:
        """:meth:`acquire`, and when taken, the value at ``guarded`` as it is under the lease (one
        round trip): ``(taken, value or None)``."""
        reply = self.redis.eval(_TAKE_READING, 2, self.key, guarded, self.token, self.ms)
        taken = bool(int(reply[0]))
        return taken, (reply[1] or None) if taken and len(reply) > 1 else None

    def renew(self) -> bool:
        """Extend the key by one TTL, only while it is ours; False when it is not any more."""
        return bool(self.redis.eval(_RENEW, 1, self.key, self.token, self.ms))

    def release(self) -> None:
        """Delete the key, only while it is ours."""
        self.redis.eval(_RELEASE, 1, self.key, self.token)

    def holder(self) -> str | None:
        """The token that holds the key, or None when it is free."""
        raw = self.redis.get(self.key)
        return raw.decode() if isinstance(raw, bytes) else raw

    def remaining_s(self) -> float:
        """Seconds until the key (held by anyone) lapses; 0 when it is free."""
        ms = self.redis.pttl(self.key)
        return max(0.0, ms / 1000) if ms and ms > 0 else 0.0
