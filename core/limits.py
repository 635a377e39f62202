"""Per-user rate limit and the queue-depth cap, both kept in Redis so every front-end shares them."""

from __future__ import annotations

import time
import uuid

import redis

from core.errors import InputError
from core.store import PENDING_KEY

# Sliding window: drop entries older than the window, count, add when under the limit; atomically.
_RATE_SCRIPT = """
local key, member = KEYS[1], ARGV[4]
local now, window, limit = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', key, '-inf', now - window)
local count = redis.call('ZCARD', key)
if count >= limit then
  local oldest = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
  return {0, tostring(tonumber(oldest[2]) + window - now)}
end
redis.call('ZADD', key, now, member)
redis.call('EXPIRE', key, math.ceil(window))
return {1, '0'}
"""


class RateLimiter:
    """At most ``limit`` jobs per user in any ``window_s`` seconds."""

    def __init__(self, client: redis.Redis, limit: int, window_s: float) -> None:
        self.redis = client
        self.limit = limit
        self.window_s = window_s
        self._script = client.register_script(_RATE_SCRIPT)

    def hit(self, user: str) -> None:
        """Count one job for ``user``; raises :class:`InputError` ``rate_limited`` when over the limit."""
        allowed, wait = self._script(
            keys=[f"ib:rate:{user}"],
            args=[time.time(), self.window_s, self.limit, uuid.uuid4().hex],
        )
        if not int(allowed):
            seconds = max(1.0, float(wait))
            raise InputError(
                "rate_limited",
                f"You have sent {self.limit} prompts in the last {int(self.window_s)} s. "
                f"Try again in {seconds:.0f} s.",
                retry_after=seconds,
            )


def check_queue_depth(client: redis.Redis, max_depth: int) -> int:
    """Raise ``queue_full`` when ``max_depth`` jobs already wait; else return how many wait."""
    depth = int(client.zcard(PENDING_KEY))
    if depth >= max_depth:
        raise InputError(
            "queue_full",
            f"The queue is full ({depth} jobs waiting). Please try again in a few minutes.",
            retry_after=60.0,
        )
    return depth
