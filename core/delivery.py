"""What the ``deliver`` task needs from each platform's sender (``bots/<platform>/send.py``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from core.jobs import JobRecord
from core.settings import Settings
from core.store import History, ImageStore


class DeliveryRetry(Exception):
    """The platform asked us to come back later (429, 5xx, network).

    Retried after ``retry_after`` seconds when the platform said how long, else with backoff.
    """

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class DeliveryFailed(Exception):
    """The platform refused the message for good (bad token, chat gone). Not retried."""


@dataclass
class DeliveryContext:
    """Everything a sender may use."""

    settings: Settings
    images: ImageStore
    history: History


class Sender(Protocol):
    """Posts a finished (or failed, or cancelled) job into its conversation, exactly once."""

    def __call__(self, record: JobRecord, ctx: DeliveryContext) -> None:
        """Post it; raise :class:`DeliveryRetry` or :class:`DeliveryFailed` when it cannot."""
        ...


def result_caption(record: JobRecord) -> str:
    """One-line summary shared by all platforms: prompt, seed, engines and timings."""
    parts = [f"“{record.request.prompt}”", f"seed {record.seed}"]
    for result in record.results:
        parts.append(f"{result.engine} {result.version} {result.seconds:.2f} s")
    return " · ".join(parts)
