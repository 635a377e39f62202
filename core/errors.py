"""Errors that carry a message meant for the person in the conversation."""

from __future__ import annotations


class InputError(Exception):
    """Something a user typed or asked for cannot be done. ``message`` is shown to them as is.

    ``code`` is a stable machine-readable name (tests and API clients match on it);
    ``retry_after`` is set for limits that lift with time.
    """

    def __init__(self, code: str, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.retry_after = retry_after

    def to_dict(self) -> dict[str, object]:
        """JSON form used by the web API."""
        data: dict[str, object] = {"error": self.message, "code": self.code}
        if self.retry_after is not None:
            data["retry_after"] = round(self.retry_after, 1)
        return data


class JobNotFound(Exception):
    """No job with this id (never existed, or expired)."""
