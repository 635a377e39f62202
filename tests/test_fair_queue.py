"""The fair order of waiting jobs (core/fair_queue.py) on a real Redis: who is drawn next, lanes,
batching, cancelling, admission limits under concurrency, and the position/ETA people see."""

from __future__ import annotations

import threading
import uuid
from collections import Counter

import pytest
import redis

from core.embedded_redis import EmbeddedRedis
from core.errors import InputError
from core.fair_queue import FairQueue, FairShare
from core.store import PENDING_KEY

LIMITS = {"max_depth": 1000, "rate_limit": 10_000, "window_s": 60.0}


def submit(fq: FairQueue, user: str, lane: str = "relax", batch: str = "b", **limits: float) -> str:
    """Admit one new job for ``user``; returns its id."""
    job = uuid.uuid4().hex[:16]
    fq.admit(job, user=user, conversation=f"c-{user}", lane=lane, batch=batch, created_at=0.0,
             **{**LIMITS, **limits})  # fmt: skip
    return job


def drain(fq: FairQueue, owners: dict[str, str], n: int | None = None) -> list[str]:
    """Claim one job at a time; the owners of the jobs in the order they were drawn."""
    order: list[str] = []
    while n is None or len(order) < n:
        got = fq.claim()
        if not got:
            break
        order.extend(owners[job] for job in got)
    return order


def jain(values: list[float]) -> float:
    """Jain's fairness index: 1.0 when all equal, 1/n when one has everything."""
    return sum(values) ** 2 / (len(values) * sum(v * v for v in values))


def test_one_users_jobs_come_out_in_the_order_they_went_in(clean_redis: redis.Redis) -> None:
    fq = FairQueue(clean_redis)
    jobs = [submit(fq, "alice") for _ in range(10)]
    assert [fq.claim() for _ in range(10)] == [[job] for job in jobs]
    assert fq.claim() == []
    assert clean_redis.zcard(PENDING_KEY) == 0


def test_light_users_are_not_stuck_behind_a_heavy_user(clean_redis: redis.Redis) -> None:
    """FIFO would draw 50 jobs before the light users' first; fair share at most one per active user."""
    fq = FairQueue(clean_redis)
    owners = {submit(fq, "heavy"): "heavy" for _ in range(50)}
    fq.claim()  # a worker is already busy with the heavy user's first job
    light = [f"light{i}" for i in range(5)]
    owners.update({submit(fq, user): user for user in light})
    order = drain(fq, owners)
    for user in light:
        assert order.index(user) + 1 <= len(light) + 1, order[:12]
    assert Counter(order) == Counter({"heavy": 49, **dict.fromkeys(light, 1)})


def test_backlogged_users_share_the_gpu_evenly_even_with_different_job_costs(
    clean_redis: redis.Redis,
) -> None:
    fq = FairQueue(clean_redis, policy=FairShare(default_cost_s=1.0))
    fq.record_cost("big", 4.0)  # a's jobs take four times as long as b's and c's
    owners = {submit(fq, "a", batch="big"): "a" for _ in range(30)}
    owners.update({submit(fq, "b", batch="small"): "b" for _ in range(60)})
    owners.update({submit(fq, "c", batch="small"): "c" for _ in range(60)})
    order = drain(fq, owners, n=36)
    drawn = Counter(order)
    gpu_s = [drawn["a"] * 4.0, drawn["b"] * 1.0, drawn["c"] * 1.0]
    assert jain(gpu_s) >= 0.95, (drawn, gpu_s)
    assert drawn["b"] >= 3 * drawn["a"]


def test_the_fast_lane_gets_its_share_and_never_starves_the_relax_lane(clean_redis: redis.Redis) -> None:
    fq = FairQueue(clean_redis, policy=FairShare(fast_share=0.8))
    owners = {submit(fq, "admin", lane="fast"): "fast" for _ in range(100)}
    owners.update({submit(fq, f"u{i}", lane="relax"): "relax" for i in range(100)})
    order = drain(fq, owners, n=50)
    assert Counter(order)["relax"] in range(9, 12), order  # a fifth of 50
    assert "relax" in order[:6]


def test_a_lane_that_was_idle_saves_up_no_credit(clean_redis: redis.Redis) -> None:
    fq = FairQueue(clean_redis, policy=FairShare(fast_share=0.5))
    owners = {submit(fq, "r", lane="relax"): "relax" for _ in range(40)}
    drain(fq, owners, n=30)  # only relax ran for a while
    owners.update({submit(fq, "f", lane="fast"): "fast" for _ in range(40)})
    order = drain(fq, owners, n=10)
    assert Counter(order)["relax"] >= 4, order  # the fast lane does not get 30 jobs in a row


def test_a_claim_batches_only_jobs_that_can_be_drawn_together(clean_redis: redis.Redis) -> None:
    fq = FairQueue(clean_redis)
    first = submit(fq, "a", batch="dfgan/64")
    other = submit(fq, "b", batch="diffusion/64")
    same = [submit(fq, user, batch="dfgan/64") for user in ("c", "d", "e")]
    assert fq.claim(max_batch=3) == [first, *same[:2]]
    assert fq.claim(max_batch=8) == [other]
    assert fq.claim(max_batch=8) == [same[2]]


def test_a_cancelled_job_is_never_claimed_and_its_cost_is_given_back(clean_redis: redis.Redis) -> None:
    fq = FairQueue(clean_redis)
    keep = submit(fq, "a")
    dropped = submit(fq, "a")
    assert fq.remove(dropped) and not fq.remove(dropped)
    assert not fq.waiting(dropped) and clean_redis.zscore(PENDING_KEY, dropped) is None
    later = submit(fq, "a")  # takes the cancelled job's place in a's share, not one after it
    b1, b2 = submit(fq, "b"), submit(fq, "b")
    assert [fq.claim() for _ in range(5)] == [[keep], [b1], [later], [b2], []]


def test_concurrent_submits_never_overshoot_the_cap(
    clean_redis: redis.Redis, redis_server: EmbeddedRedis
) -> None:
    fq = FairQueue(clean_redis)
    admitted: list[str] = []
    refused: Counter[str] = Counter()

    def user(i: int) -> None:
        local = FairQueue(redis.Redis.from_url(redis_server.url))
        for _ in range(10):
            try:
                admitted.append(submit(local, f"user{i}", max_depth=100))
            except InputError as exc:
                refused[exc.code] += 1

    threads = [threading.Thread(target=user, args=(i,)) for i in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert len(admitted) == 100 and refused == Counter({"queue_full": 100})
    assert clean_redis.zcard(PENDING_KEY) == 100
    assert len(fq.claim(max_batch=1000)) == 32  # one lane scan's worth, all compatible
    assert len(fq.claim(max_batch=1000)) == 32


SHARES = [("user_queue_share", "user_queue_full"), ("conversation_queue_share", "conversation_queue_full")]


@pytest.mark.parametrize(("share", "code"), SHARES)
def test_one_user_or_conversation_may_hold_only_its_share_of_the_queue(
    clean_redis: redis.Redis, share: str, code: str
) -> None:
    fq = FairQueue(clean_redis, policy=FairShare(**{share: 0.3}))
    for _ in range(3):
        submit(fq, "greedy", max_depth=10)
    with pytest.raises(InputError) as refused:
        submit(fq, "greedy", max_depth=10)
    assert refused.value.code == code and "3 pictures waiting" in refused.value.message
    submit(fq, "someone-else", max_depth=10)  # others still get in
    fq.claim()
    submit(fq, "greedy", max_depth=10)  # and the greedy one again once one of theirs is drawn


def test_position_and_eta_follow_the_fair_order_and_the_measured_cost(clean_redis: redis.Redis) -> None:
    fq = FairQueue(clean_redis)
    fq.record_cost("b", 10.0)
    heavy = [submit(fq, "heavy") for _ in range(10)]
    light = submit(fq, "light")
    placed = fq.placement(light, workers=2)
    assert placed is not None and placed.waiting == 11
    assert placed <= 2  # behind at most the heavy user's first job
    last = fq.placement(heavy[-1], workers=2)
    assert last is not None and last == 11
    assert last.eta_s == pytest.approx(11 * 10.0 / 2)
    assert fq.placement(heavy[0], workers=0).eta_s is None  # type: ignore[union-attr]
    fq.claim()
    assert fq.placement(heavy[0], workers=1) is None


def test_lanes_come_from_the_settings_and_the_daily_fast_quota(clean_redis: redis.Redis, settings) -> None:  # noqa: ANN001
    tuned = settings.model_copy(
        update={"admin_ids": "discord:1", "fast_users": "telegram:7", "fast_daily_quota_s": 10.0}
    )
    fq = FairQueue(clean_redis)
    assert fq.lane_for(tuned, "discord:1") == "fast" and fq.lane_for(tuned, "telegram:7") == "fast"
    assert fq.lane_for(tuned, "web:someone") == "fast"  # under the quota
    fq.settle("dfgan/4/64", ["web:someone", "telegram:7"], seconds=8.0)
    assert fq.lane_for(tuned, "web:someone") == "fast"  # 4 s of 10
    fq.settle("dfgan/4/64", ["web:someone", "web:someone"], seconds=12.0)
    assert fq.lane_for(tuned, "web:someone") == "relax"  # 4 + 12 s: past the quota
    assert fq.cost_of("dfgan/4/64") == pytest.approx(0.7 * 4.0 + 0.3 * 6.0)
    assert fq.lane_for(tuned, "telegram:7") == "fast"  # listed users stay fast past any quota
    assert fq.lane_for(settings, "web:someone") == "relax"  # no quota configured: everyone else relaxes


def test_a_job_taken_by_a_worker_that_died_goes_back_to_the_front(clean_redis: redis.Redis) -> None:
    """Taken from the queue, never confirmed (the worker died before claiming the record): reported
    as stale after a while and put back where it was in line; confirmed jobs are forgotten."""
    fq = FairQueue(clean_redis)
    first, second, third = (submit(fq, user) for user in ("a", "b", "c"))
    taken = fq.take(own=second)
    assert taken.claimed == [first] and taken.stale == [] and taken.own == "waiting"
    assert fq.take(own=first).own == "taken"
    lost = fq.take(stale_after_s=-1.0)  # whoever took `first` and `second` died before confirming
    assert lost.claimed == [third] and set(lost.stale) >= {first, second}
    fq.confirm([third])
    assert fq.requeue([first, second, third]) == 2  # `third` was confirmed: not put back
    assert fq.claim() == [first] and fq.claim() == [second] and fq.claim() == []
    fq.confirm([first, second])
    assert fq.take(own=first).own == "gone" and fq.requeue([first]) == 0


def test_cancelling_a_taken_job_leaves_it_to_the_record(clean_redis: redis.Redis) -> None:
    fq = FairQueue(clean_redis)
    job = submit(fq, "a")
    assert fq.claim() == [job]
    assert not fq.remove(job)  # a worker has it: the cancel is written in the record, not here
    assert fq.requeue([job]) == 0 and fq.take(own=job).own == "gone"


def test_jobs_batch_only_with_the_same_model_loras_and_image_mode() -> None:
    from core.fair_queue import batch_key_of
    from core.jobs import Conversation, JobRecord, JobRequest, LoraChoice

    def key(**fields: object) -> str:
        values: dict[str, object] = {"prompt": "p", "engines": ["diffusion"], "user": "web:x"}
        request = JobRequest(conversation=Conversation(platform="web", chat_id="x"), **{**values, **fields})
        return batch_key_of(JobRecord(request=request, seed=1, steps=4, size=64))

    plain = key()
    assert key(seed=9, prompt="other") == plain  # prompts and seeds differ within a batch
    different = [
        key(model="sdxl"),
        key(loras=[LoraChoice(name="ink", weight=0.5)]),
        key(loras=[LoraChoice(name="ink", weight=1.0)]),
        key(image_key="ib:upload:0123456789abcdef", strength=0.6),
    ]
    assert len({plain, *different}) == 5
    two = [LoraChoice(name="a"), LoraChoice(name="b")]
    assert key(loras=two) == key(loras=two[::-1])


def test_a_new_kind_of_job_is_first_assumed_to_cost_what_its_engines_took(clean_redis: redis.Redis) -> None:
    fq = FairQueue(clean_redis, policy=FairShare(default_cost_s=2.0))
    assert fq.cost_of("dfgan/4/64") == 2.0  # nothing measured yet: the default
    fq.record_cost("dfgan/4/64", 0.01)
    assert fq.cost_of("dfgan/8/128") == pytest.approx(0.01)  # same engines, other steps and size
    assert fq.cost_of("diffusion/4/64") == 2.0
