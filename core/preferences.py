"""Per-user defaults (``/settings``): engines, steps, size and count a user's prompts start from."""

from __future__ import annotations

import redis
from pydantic import BaseModel

from core.errors import InputError
from core.jobs import Conversation, JobRequest
from core.prompt import parse_prompt
from core.settings import Settings


class Preferences(BaseModel):
    """A user's defaults; None means "the server's default"."""

    engines: list[str] | None = None
    steps: int | None = None
    size: int | None = None
    count: int | None = None


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

    def set_from_text(self, user: str, text: str, settings: Settings) -> Preferences:
        """Parse ``--engine a,b --steps N --size N --n N`` (the prompt flags), validate, and store.

        ``reset`` clears them. Raises :class:`InputError` with the same messages as a prompt.
        """
        if text.strip().lower() == "reset":
            self.redis.delete(self.key(user))
            return Preferences()
        parsed = parse_prompt(text)
        if parsed.prompt:
            raise InputError(
                "bad_settings", "Give only options, e.g. /settings --engine dfgan --steps 30 (or: reset)."
            )
        if parsed.seed is not None or parsed.negative_prompt is not None:
            raise InputError("bad_settings", "Seed and --no are per prompt; they cannot be defaults.")
        # Validate through the same rules as a job, with a placeholder prompt.
        probe = JobRequest(
            prompt="x",
            engines=parsed.engines,
            steps=parsed.steps,
            size=parsed.size,
            count=parsed.count or 1,
            user=user,
            conversation=Conversation(platform="settings", chat_id="-"),
        )
        from core.validation import validate_request  # validation imports this module

        validate_request(probe, settings)
        current = self.get(user)
        update = {
            "engines": parsed.engines or current.engines,
            "steps": parsed.steps if parsed.steps is not None else current.steps,
            "size": parsed.size if parsed.size is not None else current.size,
            "count": parsed.count if parsed.count is not None else current.count,
        }
        prefs = Preferences(**update)
        self.redis.set(self.key(user), prefs.model_dump_json())
        return prefs
