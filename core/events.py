"""Nudges per conversation over Redis pub/sub: "something this conversation shows has changed".

Whoever changes what a conversation shows publishes a nudge on the conversation's channel: the
history (:meth:`core.store.History.append`: a new job, a delivered result, a notice) and the worker's
progress writes. A listener (the web chat's Server-Sent Events stream, ``bots/web/events.py``) wakes at
once and re-reads the state from Redis. A nudge carries no state of its own, so a listener that was
not subscribed when it was sent loses nothing: it reads the state when it (re)connects, and looks again
every second or so anyway (queue positions change without a nudge).
"""

from __future__ import annotations

import json
from types import TracebackType
from typing import Any

import redis

CHANNEL_PREFIX = "ib:events:"


def channel(platform: str, chat_id: str) -> str:
    """The pub/sub channel of one conversation."""
    return f"{CHANNEL_PREFIX}{platform}:{chat_id}"


def nudge_message(kind: str, job_id: str | None = None) -> str:
    """What a nudge says: ``{"kind": "history"|"progress"|..., "job_id": ...}`` as JSON."""
    return json.dumps({"kind": kind, "job_id": job_id})


def publish(client: redis.Redis, platform: str, chat_id: str, kind: str, job_id: str | None = None) -> None:
    """Nudge the listeners of conversation ``platform``/``chat_id`` (nobody listening costs nothing)."""
    client.publish(channel(platform, chat_id), nudge_message(kind, job_id))


class Subscription:
    """Listening to one conversation's nudges (a context manager; holds one Redis connection)."""

    def __init__(self, client: redis.Redis, platform: str, chat_id: str) -> None:
        self._pubsub = client.pubsub(ignore_subscribe_messages=True)
        self._pubsub.subscribe(channel(platform, chat_id))

    def wait(self, timeout_s: float) -> list[dict[str, Any]]:
        """The nudges that arrive within ``timeout_s`` (returns at the first one, with any others
        already waiting); ``[]`` when none came."""
        first = self._pubsub.get_message(timeout=timeout_s)
        if first is None:
            return []
        found = [first]
        while (more := self._pubsub.get_message(timeout=0)) is not None:
            found.append(more)
        return [_decoded(m) for m in found if m.get("type") == "message"]

    def close(self) -> None:
        """Unsubscribe and give the connection back."""
        try:
            self._pubsub.unsubscribe()
        except redis.RedisError:
            pass
        finally:
            self._pubsub.close()

    def __enter__(self) -> Subscription:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def _decoded(message: dict[str, Any]) -> dict[str, Any]:
    data = message.get("data")
    try:
        value = json.loads(data)
    except (TypeError, ValueError):
        return {"kind": "unknown", "job_id": None}
    return value if isinstance(value, dict) else {"kind": "unknown", "job_id": None}
