"""Per-user rate limit and the queue-depth cap, both kept in Redis so every front-end shares them.

:class:`Admission` applies both and adds the job to the pending set in one atomic script: that is
what :meth:`core.job_client.QueueClient.submit` uses. :class:`RateLimiter` and :func:`check_queue_depth`
are the separate checks, for callers that only ask.
"""

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


# Admission of one job, atomically: the queue-depth cap, then the user's rate limit, then the job
# joins the pending set. A check-then-add in two round trips lets concurrent submits overshoot the cap.
_ADMIT_SCRIPT = """
local pending, rate = KEYS[1], KEYS[2]
local job_id, created = ARGV[1], tonumber(ARGV[2])
local now, window = tonumber(ARGV[3]), tonumber(ARGV[4])
local limit, max_depth = tonumber(ARGV[5]), tonumber(ARGV[6])
local depth = redis.call('ZCARD', pending)
if depth >= max_depth then
  return {0, tostring(depth)}
end
redis.call('ZREMRANGEBYSCORE', rate, '-inf', now - window)
if redis.call('ZCARD', rate) >= limit then
  local oldest = redis.call('ZRANGE', rate, 0, 0, 'WITHSCORES')
  return {-1, tostring(tonumber(oldest[2]) + window - now)}
end
redis.call('ZADD', rate, now, job_id)
redis.call('EXPIRE', rate, math.ceil(window))
redis.call('ZADD', pending, created, job_id)
return {1, tostring(depth + 1)}
"""


class Admission:
    """Admits a job into the pending set under the queue-depth cap and the user's rate limit, in one
    atomic step (a Lua script), so concurrent submits from any number of front-ends never overshoot."""

    def __init__(self, client: redis.Redis, max_depth: int, rate_limit: int, window_s: float) -> None:
        self.redis = client
        self.max_depth = max_depth
        self.rate_limit = rate_limit
        self.window_s = window_s
        self._script = client.register_script(_ADMIT_SCRIPT)

    def admit(self, job_id: str, created_at: float, user: str) -> int:
        """Add ``job_id`` to the pending set; returns the depth after it. Raises :class:`InputError`
        ``queue_full`` or ``rate_limited`` (nothing is added then)."""
        verdict, value = self._script(
            keys=[PENDING_KEY, f"ib:rate:{user}"],
            args=[job_id, created_at, time.time(), self.window_s, self.rate_limit, self.max_depth],
        )
        verdict = int(verdict)
        if verdict == 0:
            raise queue_full(int(float(value)))
        if verdict < 0:
            raise rate_limited(self.rate_limit, self.window_s, float(value))
        return int(float(value))


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


def check_queue_depth(client: redis.Redis, max_depth: int) -> int:
    """Raise ``queue_full`` when ``max_depth`` jobs already wait; else return how many wait."""
    depth = int(client.zcard(PENDING_KEY))
    if depth >= max_depth:
        raise queue_full(depth)
    return depth
