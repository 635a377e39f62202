"""Waiting for a condition instead of sleeping a fixed time."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


def eventually(
    check: Callable[[], Any], timeout_s: float = 120.0, what: str = "the condition", interval_s: float = 0.1
) -> Any:
    """Poll ``check()`` until it returns something truthy and return that; fail naming ``what`` after
    ``timeout_s`` seconds (bounded: never a fixed sleep before a "this never happened" check)."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout_s:.0f} s: {what}")
        time.sleep(interval_s)


def queues_drained(
    app: Any, client: Any, queues: tuple[str, ...] = ("gpu", "delivery"), timeout_s: float = 60
) -> None:
    """Wait until every task sent to ``queues`` before this call has run: a no-op ``imaginebot.ping``
    goes to the back of each queue (FIFO) and is waited for. The barrier before a "this never happened
    twice" check, instead of a fixed sleep."""
    import uuid

    from core.task_contract import PING_PREFIX, PING_TASK

    keys = []
    for queue in queues:
        key = f"{PING_PREFIX}drained-{queue}-{uuid.uuid4().hex[:8]}"
        app.send_task(PING_TASK, args=[key], queue=queue)
        keys.append(key)
    eventually(lambda: all(client.get(key) for key in keys), timeout_s, f"the tasks queued on {queues} ran")
