"""Which waiting job a worker draws next: fair share between users, inside two priority lanes.

The order is start-time fair queuing (SFQ, Goyal, Vin and Cheng 1996) over one flow per user, kept in
Redis and changed only by Lua scripts, so any number of front-ends and workers see one order:

- every user has a *finish tag* ``F_u``: the virtual GPU seconds they have been given, divided by
  their weight;
- a job that arrives gets the start tag ``S = max(V, F_u)``, and the user's tag moves on to
  ``F_u = S + cost / weight``, where ``cost`` is the measured seconds a job like it takes and ``V`` is
  the lane's virtual time (the start tag of the job claimed last);
- workers claim jobs in increasing start tag.

So a user who has had a lot of GPU time recently waits behind one who has had little, and someone who
comes back after a pause starts at ``V``: no credit saved up while away, no debt carried either. One
user's fifty jobs get tags ``V, V+c, V+2c, …``; five light users arriving later each get a tag near
``V`` and are drawn after at most one job per active user, not after the fifty.

Lanes (``fast``, ``relax``, like the fast/relax modes people know) are flows of the same kind one level
up: each lane has a share, and the backlogged lane with the smallest lane tag goes next, the tag moving
on by ``cost / share``. With shares 0.8/0.2 the relax lane still gets a fifth of the GPU when both are
full: neither starves.

Admission (the queue-depth cap, each user's and conversation's share of it, the rate limit) happens in
the same script as the tagging: concurrent submits never overshoot.

Keys, per *route* (the worker queue a job needs, ``gpu`` by default):

- ``ib:fq:<route>:lane:<lane>``  sorted set, job id -> start tag: the order within a lane
- ``ib:fq:<route>:tags``        hash: ``u:<lane>:<user>`` -> finish tag, ``v:<lane>`` -> virtual time,
  ``l:<lane>`` -> lane tag, ``lv`` -> the lanes' virtual time
- ``ib:fq:<route>:jobs``        hash: job id -> ``lane|user|conversation|batch|cost|start|charge|member``
- ``ib:fq:<route>:taken``       sorted set, job id -> when a worker took it (until it confirms)
- ``ib:fq:<route>:seq``         arrival counter: lane members are ``<arrival>:<job id>``, so equal
  tags are served first come, first served
- ``ib:fq:<route>:counts``      hash: ``u:<user>`` / ``c:<conversation>`` -> jobs waiting
- ``ib:fq:<route>:cost``        hash: batch key -> measured seconds per job (moving average)

Torch-free and chat-library-free, like all of ``core``.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import redis

from core.errors import InputError
from core.jobs import Conversation, JobRecord
from core.limits import queue_full, rate_limited
from core.settings import Settings
from core.store import PENDING_KEY, JobStore

LANES = ("fast", "relax")
DEFAULT_ROUTE = "gpu"
#: Weight of a new measurement in the moving average of seconds per job.
COST_SMOOTHING = 0.3
#: How far down a lane a claim looks for jobs it can batch with the first one.
BATCH_SCAN = 32
#: A job taken from the queue but not confirmed (its record claimed) after this long is put back:
#: the worker that took it died in between.
STALE_TAKEN_S = 30.0

_LIB = """
local function tag(tags, field)
  return tonumber(redis.call('HGET', tags, field) or '0')
end
local function split(meta)
  local out = {}
  for part in string.gmatch(meta, '([^|]*)|?') do out[#out + 1] = part end
  return out
end
local function uncount(counts, user, conversation)
  if redis.call('HINCRBY', counts, 'u:' .. user, -1) <= 0 then redis.call('HDEL', counts, 'u:' .. user) end
  if redis.call('HINCRBY', counts, 'c:' .. conversation, -1) <= 0 then
    redis.call('HDEL', counts, 'c:' .. conversation)
  end
end
"""

# KEYS: pending, rate, lane zset, tags, jobs, counts, seq, cost; optionally the job's record and its
#       user's list of recent jobs (written with the admission, see JobWrite)
# ARGV: job, created, now, window, rate_limit, max_depth, user, conversation, lane, batch, default cost,
#       weight, max_user, max_conversation, the batch's engines key (its cost is the fallback); with the
#       two optional keys: the record's JSON, its TTL, how many recent jobs the list keeps
_ADMIT = (
    _LIB
    + """
local pending, rate, lane_set, tags, jobs, counts = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local job, created, now, window = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local limit, max_depth = tonumber(ARGV[5]), tonumber(ARGV[6])
local user, conversation, lane, batch = ARGV[7], ARGV[8], ARGV[9], ARGV[10]
local weight = tonumber(ARGV[12])
-- the measured cost of this kind of job, else of any job with its engines, else the default
local cost = tonumber(redis.call('HGET', KEYS[8], batch) or redis.call('HGET', KEYS[8], ARGV[15]) or ARGV[11])
local max_user, max_conversation = tonumber(ARGV[13]), tonumber(ARGV[14])
local depth = redis.call('ZCARD', pending)
if depth >= max_depth then return {0, tostring(depth)} end
if tonumber(redis.call('HGET', counts, 'u:' .. user) or '0') >= max_user then
  return {-2, tostring(max_user)}
end
if tonumber(redis.call('HGET', counts, 'c:' .. conversation) or '0') >= max_conversation then
  return {-3, tostring(max_conversation)}
end
redis.call('ZREMRANGEBYSCORE', rate, '-inf', now - window)
if redis.call('ZCARD', rate) >= limit then
  local oldest = redis.call('ZRANGE', rate, 0, 0, 'WITHSCORES')
  return {-1, tostring(tonumber(oldest[2]) + window - now)}
end
redis.call('ZADD', rate, now, job)
redis.call('EXPIRE', rate, math.ceil(window))
if redis.call('ZCARD', lane_set) == 0 then
  -- a lane that was idle starts from the lanes' virtual time: no credit saved up while idle
  local lane_tag = math.max(tag(tags, 'l:' .. lane), tag(tags, 'lv'))
  redis.call('HSET', tags, 'l:' .. lane, tostring(lane_tag))
end
local start = math.max(tag(tags, 'v:' .. lane), tag(tags, 'u:' .. lane .. ':' .. user))
local charge = cost / weight
redis.call('HSET', tags, 'u:' .. lane .. ':' .. user, tostring(start + charge))
-- equal tags go first come, first served: the member starts with an arrival number
local member = string.format('%015d', redis.call('INCR', KEYS[7])) .. ':' .. job
redis.call('ZADD', lane_set, start, member)
local meta = {lane, user, conversation, batch, tostring(cost), tostring(start), tostring(charge), member}
redis.call('HSET', jobs, job, table.concat(meta, '|'))
redis.call('HINCRBY', counts, 'u:' .. user, 1)
redis.call('HINCRBY', counts, 'c:' .. conversation, 1)
redis.call('ZADD', pending, created, job)
if #KEYS >= 10 then
  redis.call('SET', KEYS[9], ARGV[16], 'EX', ARGV[17])
  redis.call('RPUSH', KEYS[10], job)
  redis.call('LTRIM', KEYS[10], -tonumber(ARGV[18]), -1)
  redis.call('EXPIRE', KEYS[10], ARGV[17])
end
return {1, tostring(depth + 1)}
"""
)

# KEYS: tags, jobs, counts, pending, taken, lane zsets (one per lane, in LANES order)
# ARGV: max_batch, batch scan, now, stale before, the caller's own job, then name and share of each lane,
#       then the job records' key prefix, then keys the caller also wants read (see FairQueue.take)
# Returns {claimed ids, stale taken ids, the own job's state: waiting | taken | gone, claimed records,
#          for a gone own job: its record ('' when missing) and 1 if it is still in pending,
#          the values of the keys also read ('' when missing)}.
_CLAIM = (
    _LIB
    + """
local tags, jobs, counts, pending, taken = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local max_batch, scan, now = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local prefix = ARGV[6 + 2 * (#KEYS - 5)]
local stale = redis.call('ZRANGEBYSCORE', taken, '-inf', ARGV[4], 'LIMIT', 0, 16)
local best, best_tag = nil, nil
for i = 6, #KEYS do
  if redis.call('ZCARD', KEYS[i]) > 0 then
    local lane_tag = tag(tags, 'l:' .. ARGV[2 * (i - 5) + 4])
    if best == nil or lane_tag < best_tag then best, best_tag = i, lane_tag end
  end
end
local claimed = {}
if best ~= nil then
  local lane, share = ARGV[2 * (best - 5) + 4], tonumber(ARGV[2 * (best - 5) + 5])
  local lane_set, batch = KEYS[best], nil
  local candidates = redis.call('ZRANGE', lane_set, 0, scan - 1, 'WITHSCORES')
  for i = 1, #candidates, 2 do
    local member, start = candidates[i], tonumber(candidates[i + 1])
    local job = string.sub(member, 17)
    local meta = redis.call('HGET', jobs, job)
    local parts = meta and split(meta) or {lane, '', '', '', '0', tostring(start), '0', member}
    if batch == nil or parts[4] == batch then
      if batch == nil then
        batch = parts[4]
        redis.call('HSET', tags, 'v:' .. lane, tostring(start))
        redis.call('HSET', tags, 'lv', tostring(best_tag))
      end
      redis.call('ZREM', lane_set, member)
      redis.call('ZREM', pending, job)
      if meta then
        redis.call('ZADD', taken, now, job)
        uncount(counts, parts[2], parts[3])
      end
      best_tag = best_tag + tonumber(parts[5]) / share
      claimed[#claimed + 1] = job
      if #claimed >= max_batch then break end
    end
  end
  redis.call('HSET', tags, 'l:' .. lane, tostring(best_tag))
end
local own = 'gone'
if redis.call('ZSCORE', taken, ARGV[5]) then own = 'taken'
elseif redis.call('HEXISTS', jobs, ARGV[5]) == 1 then own = 'waiting' end
-- the taken jobs' records as they stand, so the worker can lease them without reading them again
local records = {}
for i = 1, #claimed do records[i] = redis.call('GET', prefix .. claimed[i]) or '' end
-- a gone own job (a late message, e.g. of a job drawn in another batch): its record, so the caller
-- can tell "finished already, nothing to do" without another round trip
local own_record, own_pending = '', 0
if own == 'gone' and ARGV[5] ~= '' then
  own_record = redis.call('GET', prefix .. ARGV[5]) or ''
  if redis.call('ZSCORE', pending, ARGV[5]) then own_pending = 1 end
end
local also = {}
for i = 7 + 2 * (#KEYS - 5), #ARGV do also[#also + 1] = redis.call('GET', ARGV[i]) or '' end
return {claimed, stale, own, records, own_record, own_pending, also}
"""
)

# KEYS: jobs, counts, pending, taken, lane zsets.  ARGV: now, then job ids taken but never claimed.
# Each goes back into its lane with its old start tag: the front of the line it had reached.
_REQUEUE = (
    _LIB
    + """
local jobs, counts, pending, taken = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local back = 0
for i = 2, #ARGV do
  local job = ARGV[i]
  local meta = redis.call('HGET', jobs, job)
  if meta and redis.call('ZREM', taken, job) == 1 then
    local parts = split(meta)
    for k = 5, #KEYS do
      if string.sub(KEYS[k], -string.len(parts[1]) - 1) == ':' .. parts[1] then
        redis.call('ZADD', KEYS[k], tonumber(parts[6]), parts[8])
      end
    end
    redis.call('HINCRBY', counts, 'u:' .. parts[2], 1)
    redis.call('HINCRBY', counts, 'c:' .. parts[3], 1)
    redis.call('ZADD', pending, tonumber(ARGV[1]), job)
    back = back + 1
  end
end
return back
"""
)

# KEYS: tags, jobs, counts, pending, taken, lane zsets.  ARGV: job.  Returns 1 when it was waiting.
_REMOVE = (
    _LIB
    + """
local tags, jobs, counts, pending, taken = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local job = ARGV[1]
redis.call('ZREM', pending, job)
local meta = redis.call('HGET', jobs, job)
if not meta then return 0 end
if redis.call('ZREM', taken, job) == 1 then
  redis.call('HDEL', jobs, job)  -- a worker took it already: it is that worker's (and the cancel's) now
  return 0
end
local parts = split(meta)
for i = 6, #KEYS do redis.call('ZREM', KEYS[i], parts[8]) end
redis.call('HDEL', jobs, job)
uncount(counts, parts[2], parts[3])
-- a user's last job, cancelled before it ran, is not charged: their tag goes back to its start
local user_tag = 'u:' .. parts[1] .. ':' .. parts[2]
local start, charge = tonumber(parts[6]), tonumber(parts[7])
if math.abs(tag(tags, user_tag) - (start + charge)) < 1e-9 then
  redis.call('HSET', tags, user_tag, tostring(start))
end
return 1
"""
)


# KEYS: the cost hash, then one usage key per job of the batch.
# ARGV: smoothing, seconds per job, batch key, engines key.
# Folds the measurement into both moving averages and adds it to each job's user's GPU time today.
_SETTLE = """
local smoothing, per_job = tonumber(ARGV[1]), tonumber(ARGV[2])
for _, field in ipairs({ARGV[3], ARGV[4]}) do
  local old = redis.call('HGET', KEYS[1], field)
  local new = per_job
  if old then new = (1 - smoothing) * tonumber(old) + smoothing * per_job end
  redis.call('HSET', KEYS[1], field, string.format('%.6f', new))
end
for i = 2, #KEYS do
  redis.call('INCRBYFLOAT', KEYS[i], ARGV[2])
  redis.call('EXPIRE', KEYS[i], 172800)
end
return 1
"""


class Position(int):
    """A 1-based queue position that also knows how many wait and about how long until it is drawn.

    An ``int`` (so code and JSON that want the number keep it), which :func:`describe` and the status
    line render as "position 4 of 12, about 40 s"."""

    waiting: int
    eta_s: float | None

    def __new__(cls, position: int, waiting: int, eta_s: float | None) -> Position:
        made = super().__new__(cls, position)
        made.waiting = max(waiting, position)
        made.eta_s = eta_s
        return made

    def describe(self) -> str:
        """``position 4 of 12, about 40 s`` (without the estimate while no worker can draw it)."""
        text = f"position {int(self)} of {self.waiting}"
        return text if self.eta_s is None else f"{text}, about {eta_text(self.eta_s)}"


def eta_text(seconds: float) -> str:
    """A wait said the way people say it: ``5 s``, ``40 s``, ``3 min``, ``1 h 20 min``."""
    if seconds < 10:
        return f"{max(1, round(seconds))} s"
    if seconds < 90:
        return f"{round(seconds / 5) * 5} s"
    minutes = round(seconds / 60)
    return f"{minutes} min" if minutes < 60 else f"{minutes // 60} h {minutes % 60} min"


@dataclass(frozen=True)
class Taken:
    """What one :meth:`FairQueue.take` found: the jobs this caller now has (``claimed``), jobs others
    took and never confirmed (``stale``), and where the caller's own job stands (``own``: ``waiting``
    for its turn, ``taken`` by a worker, or ``gone``: not in this queue at all)."""

    claimed: list[str]
    stale: list[str]
    own: str
    #: The claimed jobs' records (JSON) as they stood when taken; None where a record is missing.
    records: dict[str, bytes | None] = field(default_factory=dict)
    #: When ``own`` is ``gone``: the own job's record (JSON; None when missing) as it stood.
    own_record: bytes | None = None
    #: When ``own`` is ``gone``: whether the own job is still in the pending set.
    own_pending: bool = False
    #: The keys the caller asked to have read with the take, and their values (None: missing).
    also: dict[str, bytes | None] = field(default_factory=dict)


@dataclass(frozen=True)
class JobWrite:
    """What :meth:`FairQueue.admit` also writes when it admits a job, in the same atomic step: the
    job's record (so a worker never sees a queued id whose record is missing, and a refused job
    leaves no record behind) and the job's place in its user's list of recent jobs."""

    record_key: str
    record_json: str
    ttl_s: int
    user_jobs_key: str
    user_jobs_kept: int


@dataclass(frozen=True)
class FairShare:
    """The scheduling settings: lane shares, per-user weight, and each user's and conversation's share
    of the queue-depth cap."""

    fast_share: float = 0.8
    user_queue_share: float = 1.0
    conversation_queue_share: float = 1.0
    default_cost_s: float = 2.0

    @classmethod
    def from_settings(cls, settings: Settings) -> FairShare:
        """The policy the operator configured (``IMAGINEBOT_FAST_SHARE`` and friends)."""
        return cls(
            fast_share=settings.fast_share,
            user_queue_share=settings.user_queue_share,
            conversation_queue_share=settings.conversation_queue_share,
            default_cost_s=settings.default_job_cost_s,
        )

    def shares(self) -> tuple[float, float]:
        """The (fast, relax) shares, each in (0, 1)."""
        fast = min(max(self.fast_share, 0.01), 0.99)
        return fast, 1.0 - fast


class FairQueue:
    """The waiting jobs of one route in fair order (see the module docstring for the policy)."""

    def __init__(
        self, client: redis.Redis, route: str = DEFAULT_ROUTE, policy: FairShare | None = None
    ) -> None:
        self.redis = client
        self.route = route
        self.policy = policy or FairShare()
        base = f"ib:fq:{route}:"
        self.tags_key, self.jobs_key = base + "tags", base + "jobs"
        self.counts_key, self.cost_key, self.seq_key = base + "counts", base + "cost", base + "seq"
        self.taken_key = base + "taken"
        self.lane_keys = [f"{base}lane:{lane}" for lane in LANES]
        self._admit = client.register_script(_ADMIT)
        self._claim = client.register_script(_CLAIM)
        self._remove = client.register_script(_REMOVE)
        self._requeue = client.register_script(_REQUEUE)

    def lane_key(self, lane: str) -> str:
        """The sorted set of ``lane``'s waiting jobs."""
        return self.lane_keys[LANES.index(lane)]

    def admit(
        self,
        job_id: str,
        *,
        user: str,
        conversation: str,
        lane: str,
        batch: str,
        created_at: float,
        max_depth: int,
        rate_limit: int,
        window_s: float,
        weight: float = 1.0,
        write: JobWrite | None = None,
    ) -> int:
        """Queue ``job_id`` under every limit at once; returns the number waiting after it. ``write``:
        the job's record and user list, written only if it is admitted (one round trip in all).

        Raises :class:`InputError` ``queue_full``, ``user_queue_full``, ``conversation_queue_full`` or
        ``rate_limited`` (and then nothing changed)."""
        if lane not in LANES:
            raise ValueError(f"unknown lane {lane!r}")
        user, conversation, batch = (part.replace("|", "/") for part in (user, conversation, batch))
        max_user = max(1, math.floor(max_depth * self.policy.user_queue_share))
        max_conversation = max(1, math.floor(max_depth * self.policy.conversation_queue_share))
        keys = [
            PENDING_KEY,
            f"ib:rate:{user}",
            self.lane_key(lane),
            self.tags_key,
            self.jobs_key,
            self.counts_key,
            self.seq_key,
            self.cost_key,
        ]
        args = [job_id, created_at, time.time(), window_s, rate_limit, max_depth, user, conversation,
                lane, batch, self.policy.default_cost_s, max(weight, 1e-6), max_user, max_conversation,
                _engines_of(batch)]  # fmt: skip
        if write is not None:
            keys += [write.record_key, write.user_jobs_key]
            args += [write.record_json, write.ttl_s, write.user_jobs_kept]
        verdict, value = self._admit(keys=keys, args=args)
        return _admitted(int(verdict), float(value), rate_limit, window_s)

    def claim(self, max_batch: int = 1, own: str = "") -> list[str]:
        """Take the next job in fair order and up to ``max_batch - 1`` more from the same lane that can
        be drawn in one batch with it (same batch key). One round trip; [] when nothing waits.

        Taken jobs stay *taken* (not waiting, still known) until :meth:`confirm` — after the worker
        has claimed their records — so a worker that dies in between loses nothing: :meth:`take`
        reports such jobs as stale and :meth:`requeue` puts them back."""
        return self.take(max_batch, own).claimed

    def take(
        self,
        max_batch: int = 1,
        own: str = "",
        stale_after_s: float = STALE_TAKEN_S,
        also_read: tuple[str, ...] = (),
    ) -> Taken:
        """:meth:`claim`, also saying which jobs were taken and never confirmed for ``stale_after_s``,
        and where the caller's ``own`` job (the one its task message names) stands. ``also_read``:
        plain string keys to read in the same round trip (:attr:`Taken.also`), e.g. what a worker
        checks before each batch."""
        lanes = [
            part for lane, share in zip(LANES, self.policy.shares(), strict=True) for part in (lane, share)
        ]
        now = time.time()
        claimed, stale, state, records, own_record, own_pending, also = self._claim(
            keys=self._script_keys(),
            args=[max_batch, BATCH_SCAN, now, now - stale_after_s, own, *lanes, JobStore.prefix, *also_read],
        )
        ids = _strs(claimed)
        raws = {job: raw or None for job, raw in zip(ids, records, strict=True)}
        return Taken(
            claimed=ids,
            stale=_strs(stale),
            own=_str(state),
            records=raws,
            own_record=own_record or None,
            own_pending=bool(int(own_pending)),
            also={key: value or None for key, value in zip(also_read, also, strict=True)},
        )

    def confirm(self, job_ids: list[str]) -> None:
        """The worker holds these jobs' records now: forget them here (one round trip)."""
        if job_ids:
            pipe = self.redis.pipeline(transaction=False)
            self.queue_confirm(pipe, job_ids)
            pipe.execute()

    def queue_confirm(self, pipe: redis.client.Pipeline, job_ids: list[str]) -> None:
        """Add :meth:`confirm` to ``pipe`` (a pipeline the worker sends anyway)."""
        if job_ids:
            pipe.zrem(self.taken_key, *job_ids)
            pipe.hdel(self.jobs_key, *job_ids)

    def requeue(self, job_ids: list[str]) -> int:
        """Put jobs that were taken but never confirmed back where they were in line; returns how many."""
        if not job_ids:
            return 0
        keys = [self.jobs_key, self.counts_key, PENDING_KEY, self.taken_key, *self.lane_keys]
        return int(self._requeue(keys=keys, args=[time.time(), *job_ids]))

    def remove(self, job_id: str) -> bool:
        """Take a waiting job out (cancelled); True when it was waiting."""
        return bool(int(self._remove(keys=self._script_keys(), args=[job_id])))

    def _script_keys(self) -> list[str]:
        """The keys the claim and remove scripts touch, in the order they read them."""
        return [self.tags_key, self.jobs_key, self.counts_key, PENDING_KEY, self.taken_key, *self.lane_keys]

    def waiting(self, job_id: str) -> bool:
        """Whether ``job_id`` is still waiting in this route."""
        return (
            bool(self.redis.hexists(self.jobs_key, job_id))
            and self.redis.zscore(self.taken_key, job_id) is None
        )

    def cost_of(self, batch: str) -> float:
        """The measured seconds a job of ``batch`` takes; before any measurement of that exact kind, the
        measured seconds of any job with the same engines; before that, the policy's default."""
        own, same_engines = self.redis.hmget(self.cost_key, [batch, _engines_of(batch)])
        raw = own if own is not None else same_engines
        return float(raw) if raw is not None else self.policy.default_cost_s

    def record_cost(self, batch: str, seconds_per_job: float) -> None:
        """Fold one measurement into the moving averages of ``batch``'s seconds per job and of its
        engines' (what a new kind of job with the same engines is first assumed to take)."""
        self._settle_script(self.redis, batch, [], seconds_per_job)

    def settle(self, batch: str, users: list[str], seconds: float) -> None:
        """After a batch of ``batch`` jobs (one per entry of ``users``) took ``seconds`` in all: fold the
        measured seconds per job into the cost estimate and add each user's share to their GPU time
        today (what the fast lane's daily quota counts). One round trip."""
        self.queue_settle(self.redis, batch, users, seconds)

    def queue_settle(
        self, pipe: redis.Redis | redis.client.Pipeline, batch: str, users: list[str], seconds: float
    ) -> None:
        """:meth:`settle` sent through ``pipe`` (a pipeline the worker sends anyway, or the client)."""
        if users:
            self._settle_script(pipe, batch, users, seconds / len(users))

    def _settle_script(
        self, pipe: redis.Redis | redis.client.Pipeline, batch: str, users: list[str], per_job: float
    ) -> None:
        keys = [self.cost_key, *[usage_key(user) for user in users]]
        pipe.eval(_SETTLE, len(keys), *keys, COST_SMOOTHING, f"{per_job:.6f}", batch, _engines_of(batch))

    def lane_for(self, settings: Settings, user: str) -> str:
        """``fast`` for admins and listed fast users, and for everyone else while they are under the
        daily fast quota; ``relax`` otherwise."""
        if settings.is_fast(user):
            return "fast"
        if settings.fast_daily_quota_s > 0:
            used = float(self.redis.get(usage_key(user)) or 0.0)
            if used < settings.fast_daily_quota_s:
                return "fast"
        return "relax"

    def placement(self, job_id: str, workers: int) -> Position | None:
        """Where ``job_id`` stands and about when it is drawn; None when it is not waiting.

        Ahead of it: the jobs before it in its lane, plus the jobs the other lane gets in first by its
        share. The estimate adds up their measured costs and divides by ``workers`` (the live workers
        serving this route; no estimate when there are none)."""
        meta = self.redis.hget(self.jobs_key, job_id)
        if meta is None:
            return None
        mine = _Meta.parse(meta)
        lane_index = LANES.index(mine.lane)
        pipe = self.redis.pipeline()
        pipe.zrank(self.lane_keys[lane_index], mine.member)
        pipe.zcard(self.lane_keys[lane_index])
        pipe.zcard(self.lane_keys[1 - lane_index])
        rank, own, other = pipe.execute()
        if rank is None:
            return None
        ahead = self.redis.zrange(self.lane_keys[lane_index], 0, int(rank) - 1) if rank else []
        ahead_ids = [member[16:] for member in ahead]
        ahead_costs = (
            [_Meta.parse(m).cost for m in self.redis.hmget(self.jobs_key, ahead_ids) if m]
            if ahead_ids
            else []
        )
        shares = self.policy.shares()
        other_first = min(int(other), math.ceil(int(rank) * shares[1 - lane_index] / shares[lane_index]))
        ahead = int(rank) + other_first
        work_s = sum(ahead_costs) + (other_first + 1) * mine.cost
        eta = work_s / workers if workers > 0 else None
        return Position(ahead + 1, waiting=int(own) + int(other), eta_s=eta)


def batch_key(engines: list[str] | tuple[str, ...], steps: int, size: int) -> str:
    """What jobs must share to be drawn in one batch (the worker batches only equal keys)."""
    return f"{','.join(engines)}/{steps}/{size}"


def batch_key_of(record: JobRecord) -> str:
    """What a job must share with others to be drawn in one batch: engines, steps and size (and the
    width x height of a job with an aspect), the DF-GAN model, and for the diffusion engine the model,
    the LoRAs with their weights and whether it starts from an image (at which strength). The one
    definition the queue and the worker share."""
    request = record.request
    key = batch_key(request.engines, record.steps, record.size)
    extras = [f"shape={record.width}x{record.height}" if record.width != record.height else ""]
    extras.append(f"model={request.model}" if request.model else "")
    extras.append(f"dfgan={request.dfgan_model}" if request.dfgan_model else "")
    extras += [f"lora={lora.name}:{lora.weight:g}" for lora in sorted(request.loras, key=lambda x: x.name)]
    if request.image_key:
        extras.append(f"img2img={request.strength if request.strength is not None else 'default'}")
    return "/".join([key, *[extra for extra in extras if extra]])


def conversation_key(conversation: Conversation) -> str:
    """One conversation (a chat, or one thread of it) for the per-conversation queue share."""
    return f"{conversation.platform}:{conversation.chat_id}:{conversation.thread_id or ''}"


def _engines_of(batch: str) -> str:
    """The engines part of a batch key, as its own cost key."""
    return "engines:" + batch.split("/", 1)[0]


def usage_key(user: str, day: str | None = None) -> str:
    """The key of ``user``'s GPU seconds on ``day`` (UTC ``YYYY-MM-DD``, today by default)."""
    return f"ib:fq:used:{day or time.strftime('%Y-%m-%d', time.gmtime())}:{user}"


def _admitted(verdict: int, value: float, rate_limit: int, window_s: float) -> int:
    """The admit script's answer as a depth, or the :class:`InputError` it stands for."""
    if verdict == 1:
        return int(value)
    if verdict == 0:
        raise queue_full(int(value))
    if verdict == -1:
        raise rate_limited(rate_limit, window_s, value)
    if verdict == -2:
        raise InputError(
            "user_queue_full",
            f"You have {int(value)} pictures waiting already, the most one person may. "
            "Wait for one to finish, or /cancel one.",
            retry_after=30.0,
        )
    raise InputError(
        "conversation_queue_full",
        f"This conversation has {int(value)} pictures waiting already, the most allowed. "
        "Wait for one to finish, or /cancel one.",
        retry_after=30.0,
    )


@dataclass(frozen=True)
class _Meta:
    """What the scripts keep about a waiting job."""

    lane: str
    user: str
    conversation: str
    batch: str
    cost: float
    member: str

    @classmethod
    def parse(cls, raw: bytes | str) -> _Meta:
        text = raw.decode() if isinstance(raw, bytes) else raw
        lane, user, conversation, batch, cost, _start, _charge, member = text.split("|")
        return cls(lane, user, conversation, batch, float(cost), member)


def _str(raw: bytes | str) -> str:
    return raw.decode() if isinstance(raw, bytes) else str(raw)


def _strs(raws: list[bytes | str]) -> list[str]:
    return [_str(raw) for raw in raws]
