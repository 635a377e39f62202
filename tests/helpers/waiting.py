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
