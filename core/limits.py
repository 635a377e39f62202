"""Per-user rate limit and the queue-depth cap, both kept in Redis so every front-end shares them.

Admission applies both in one atomic script, together with the job's place in the fair order
(:mod:`core.fair_queue`). :class:`RateLimiter` is the separate check (the web chat's password attempts,
callers that only ask); :func:`queue_full` and :func:`rate_limited` are the answers people get.
"""

from __future__ import annotations

import time
import uuid

import redis

from core.errors import InputError

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
            raise rate_limited(self.limit, self.window_s, float(wait))

    def record(self, user: str) -> None:
        """Count one event for ``user`` without refusing it (e.g. a refused password attempt)."""
        now = time.time()
        key = f"ib:rate:{user}"
        pipe = self.redis.pipeline()
        pipe.zremrangebyscore(key, "-inf", now - self.window_s)
        pipe.zadd(key, {uuid.uuid4().hex: now})
        pipe.expire(key, int(self.window_s + 0.999))
        pipe.execute()

    def blocked_for(self, user: str) -> float | None:
        """Seconds until ``user`` is under the limit again, or None when they are under it now."""
        now = time.time()
        key = f"ib:rate:{user}"
        self.redis.zremrangebyscore(key, "-inf", now - self.window_s)
        if int(self.redis.zcard(key)) < self.limit:
            return None
        [(_, oldest)] = self.redis.zrange(key, 0, 0, withscores=True)
        return max(1.0, float(oldest) + self.window_s - now)


def queue_full(depth: int) -> InputError:
    """The answer to a prompt that finds ``depth`` jobs waiting, the cap reached."""
    return InputError(
        "queue_full",
        f"The queue is full ({depth} jobs waiting). Please try again in a few minutes.",
        retry_after=60.0,
    )


def rate_limited(limit: int, window_s: float, wait_s: float) -> InputError:
    """The answer to a user over ``limit`` prompts in ``window_s``, free again in ``wait_s``."""
    seconds = max(1.0, wait_s)
    return InputError(
        "rate_limited",
        f"You have sent {limit} prompts in the last {int(window_s)} s. Try again in {seconds:.0f} s.",
        retry_after=seconds,
    )
