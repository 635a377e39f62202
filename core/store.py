"""Job records, result images and conversation history, kept in Redis under ``ib:`` keys.

Images travel by key, never through the broker. Everything expires after ``result_ttl_s``.
"""

from __future__ import annotations

import json
import time
from typing import Any

import redis

from core.errors import JobNotFound
from core.events import channel, nudge_message
from core.jobs import JobRecord
from core.leases import LeasedStore

PENDING_KEY = "ib:pending"  # sorted set: queued job ids by submit time, for positions and the depth cap
HISTORY_LIMIT = 200


def connect(url: str) -> redis.Redis:
    """A Redis client for ``url`` with sane timeouts."""
    return redis.Redis.from_url(url, socket_connect_timeout=5, health_check_interval=30)


def job_key(job_id: str) -> str:
    """Key of a job record."""
    return f"{JobStore.prefix}{job_id}"


class JobStore(LeasedStore[JobRecord]):
    """Reads, atomically updates and leases :class:`JobRecord`s (see :mod:`core.leases`)."""

    model = JobRecord
    prefix = "ib:job:"
    missing = JobNotFound
    gave_up_error = "Gave up after {n} attempts: the worker kept stopping mid-job."


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
        # Listeners of this conversation (the web chat's event stream) look again at once.
        pipe.publish(channel(platform, chat_id), nudge_message("history", event.get("job_id")))
        pipe.execute()

    def read(self, platform: str, chat_id: str) -> list[dict[str, Any]]:
        """All kept events, oldest first."""
        return [json.loads(raw) for raw in self.redis.lrange(self.key(platform, chat_id), 0, -1)]
