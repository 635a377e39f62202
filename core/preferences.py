"""Per-user defaults (``/settings``): engines, steps, size, count and aspect ratio a user's prompts
start from.

The store only keeps them; the conversation service validates a change (with
:func:`core.validation.validate_options`, the rules of a job) before it is saved.
"""

from __future__ import annotations

import redis
from pydantic import BaseModel


class Preferences(BaseModel):
    """A user's defaults; None means "the server's default"."""

    engines: list[str] | None = None
    steps: int | None = None
    size: int | None = None
    count: int | None = None
    #: ``--ar`` in lowest terms (``16:9``; ``1:1`` sets square back as the default).
    aspect: str | None = None

    def merged(self, change: Preferences) -> Preferences:
        """These defaults with what ``change`` sets (its None and empty values leave ours as they are)."""
        given = {name: value for name, value in change.model_dump().items() if value not in (None, [])}
        return self.model_copy(update=given)


class PreferenceStore:
    """Preferences in Redis, one JSON value per user, kept until changed."""

    def __init__(self, client: redis.Redis) -> None:
        self.redis = client

    @staticmethod
    def key(user: str) -> str:
        """Key of ``user``'s preferences."""
        return f"ib:prefs:{user}"

    def get(self, user: str) -> Preferences:
        """``user``'s preferences (empty when never set)."""
        raw = self.redis.get(self.key(user))
        return Preferences.model_validate_json(raw) if raw else Preferences()

    def save(self, user: str, prefs: Preferences) -> None:
        """Store ``prefs`` as ``user``'s defaults (already validated)."""
        self.redis.set(self.key(user), prefs.model_dump_json())

    def reset(self, user: str) -> None:
        """Forget ``user``'s defaults."""
        self.redis.delete(self.key(user))
