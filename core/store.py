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
from core.pairs import PAIR, compose_stored_pair

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

    PREFIX = "ib:img:"

    @classmethod
    def key(cls, job_id: str, name: str) -> str:
        """Key of image ``name`` of job ``job_id`` (``pair`` or ``<engine>-<i>``)."""
        return f"{cls.PREFIX}{job_id}:{name}"

    def put(self, job_id: str, name: str, png: bytes) -> str:
        """Store ``png``; returns its key."""
        key = self.key(job_id, name)
        self.redis.set(key, png, ex=self.ttl_s)
        return key

    def get(self, key: str) -> bytes | None:
        """PNG bytes under ``key``, or None when expired.

        A finished job's paired image (``pair``) is composed here when it is first read, from the
        engines' stored pictures, and stored (the worker does not compose it: :mod:`core.pairs`)."""
        png = self.redis.get(key)
        if png is None and key.startswith(self.PREFIX) and key.endswith(f":{PAIR}"):
            png = self._compose_pair(key.removeprefix(self.PREFIX).removesuffix(f":{PAIR}"), key)
        return png

    def _compose_pair(self, job_id: str, key: str) -> bytes | None:
        raw = self.redis.get(job_key(job_id))
        if raw is None:
            return None
        png = compose_stored_pair(self.redis, JobRecord.model_validate_json(raw))
        if png is not None:
            self.redis.set(key, png, ex=self.ttl_s)
        return png


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
        if event.get("role") == "bot" and event.get("job_id"):
            pipe.sadd(self.told_key(platform, chat_id), str(event["job_id"]))
            pipe.expire(self.told_key(platform, chat_id), self.ttl_s)
        # Listeners of this conversation (the web chat's event stream) look again at once.
        pipe.publish(channel(platform, chat_id), nudge_message("history", event.get("job_id")))
        pipe.execute()

    def read(self, platform: str, chat_id: str) -> list[dict[str, Any]]:
        """All kept events, oldest first."""
        return [json.loads(raw) for raw in self.redis.lrange(self.key(platform, chat_id), 0, -1)]

    @staticmethod
    def told_key(platform: str, chat_id: str) -> str:
        """Key of the set of job ids the bot has said something about in one conversation."""
        return f"ib:history-told:{platform}:{chat_id}"

    def told(self, platform: str, chat_id: str, job_id: str) -> bool:
        """Whether the conversation's history has a bot event about ``job_id`` (what makes a repeated
        delivery harmless): one set lookup, instead of reading the whole history (a history written
        before the set existed is read)."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.sismember(self.told_key(platform, chat_id), job_id)
        pipe.exists(self.told_key(platform, chat_id))
        member, indexed = pipe.execute()
        if indexed:
            return bool(member)
        events = self.read(platform, chat_id)
        return any(event.get("role") == "bot" and event.get("job_id") == job_id for event in events)
