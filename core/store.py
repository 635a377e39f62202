"""Job records, result images and conversation history, kept in Redis under ``ib:`` keys.

Images travel by key, never through the broker. Everything expires after ``result_ttl_s``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any, TypeVar

import redis
from pydantic import BaseModel

from core.errors import JobNotFound
from core.jobs import JobRecord

RecordT = TypeVar("RecordT", bound=BaseModel)
PENDING_KEY = "ib:pending"  # sorted set: queued job ids by submit time, for positions and the depth cap
HISTORY_LIMIT = 200


def connect(url: str) -> redis.Redis:
    """A Redis client for ``url`` with sane timeouts."""
    return redis.Redis.from_url(url, socket_connect_timeout=5, health_check_interval=30)


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


def job_key(job_id: str) -> str:
    """Key of a job record."""
    return f"ib:job:{job_id}"


class JobStore:
    """Reads and atomically updates :class:`JobRecord`s."""

    def __init__(self, client: redis.Redis, ttl_s: int) -> None:
        self.redis = client
        self.ttl_s = ttl_s

    def save(self, record: JobRecord) -> None:
        """Write the whole record."""
        self.redis.set(job_key(record.id), record.model_dump_json(), ex=self.ttl_s)

    def get(self, job_id: str) -> JobRecord:
        """The record of ``job_id``; raises :class:`JobNotFound`."""
        raw = self.redis.get(job_key(job_id))
        if raw is None:
            raise JobNotFound(job_id)
        return JobRecord.model_validate_json(raw)

    def update(self, job_id: str, change: Callable[[JobRecord], JobRecord | None]) -> JobRecord:
        """Apply ``change`` atomically (optimistic WATCH/MULTI; retried on conflict).

        ``change`` mutates the record in place or returns a replacement; returning the record
        unchanged is fine. Returns the stored result.
        """
        return update_record(
            self.redis, job_key(job_id), JobRecord, change, self.ttl_s, lambda: JobNotFound(job_id)
        )


class ImageStore:
    """PNG bytes by key, with a TTL."""

    def __init__(self, client: redis.Redis, ttl_s: int) -> None:
        self.redis = client
        self.ttl_s = ttl_s

    @staticmethod
    def key(job_id: str, name: str) -> str:
        """Key of image ``name`` of job ``job_id`` (``pair`` or ``<engine>-<i>``)."""
        return f"ib:img:{job_id}:{name}"

    def put(self, job_id: str, name: str, png: bytes) -> str:
        """Store ``png``; returns its key."""
        key = self.key(job_id, name)
        self.redis.set(key, png, ex=self.ttl_s)
        return key

    def get(self, key: str) -> bytes | None:
        """PNG bytes under ``key``, or None when expired."""
        return self.redis.get(key)


class History:
    """Per-conversation event log (user prompts, bot answers), newest last; survives page reloads."""

    def __init__(self, client: redis.Redis, ttl_s: int) -> None:
        self.redis = client
        self.ttl_s = ttl_s

    @staticmethod
    def key(platform: str, chat_id: str) -> str:
        """Key of one conversation's log."""
        return f"ib:history:{platform}:{chat_id}"

    def append(self, platform: str, chat_id: str, event: dict[str, Any]) -> None:
        """Add ``event`` (JSON-able) with a timestamp; keeps the newest :data:`HISTORY_LIMIT`."""
        key = self.key(platform, chat_id)
        event = {"ts": time.time(), **event}
        pipe = self.redis.pipeline()
        pipe.rpush(key, json.dumps(event))
        pipe.ltrim(key, -HISTORY_LIMIT, -1)
        pipe.expire(key, self.ttl_s)
        pipe.execute()

    def read(self, platform: str, chat_id: str) -> list[dict[str, Any]]:
        """All kept events, oldest first."""
        return [json.loads(raw) for raw in self.redis.lrange(self.key(platform, chat_id), 0, -1)]
