"""Who is asking, and where the answers go: one value every action is called with."""

from __future__ import annotations

from dataclasses import dataclass

from core.commands import is_admin
from core.jobs import Conversation
from core.settings import Settings


@dataclass(frozen=True)
class Caller:
    """A person on a platform, in a conversation.

    ``user_id`` is the platform's id of the person (the web chat's: its conversation id; the CLI's:
    the operator's login name). ``conversation`` is where a result goes (chat, thread, message to
    reply to). ``is_admin``: may run admin commands (``/retrain``, ``/model``).
    """

    platform: str
    user_id: str
    conversation: Conversation
    is_admin: bool = False

    @property
    def user(self) -> str:
        """The ``platform:user_id`` key that limits, preferences and ownership use."""
        return f"{self.platform}:{self.user_id}"

    @classmethod
    def of(cls, settings: Settings, user_id: str, conversation: Conversation) -> Caller:
        """The caller ``user_id`` on ``conversation.platform``, an admin when ``settings`` say so."""
        platform = conversation.platform
        return cls(platform, str(user_id), conversation, is_admin(settings, f"{platform}:{user_id}"))
