"""The command line's side of the conversation service: who is asking (the local user, ``cli:<uid>``,
an admin as every local operator is) and the service its commands call."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from core.settings import Settings

if TYPE_CHECKING:
    from core.conversation import Caller, ConversationService


def cli_caller(settings: Settings) -> Caller:
    """The person at this terminal, in the one conversation the command line has."""
    from core.conversation import Caller
    from core.jobs import Conversation

    return Caller.of(settings, str(os.getuid()), Conversation(platform="cli", chat_id="cli"))


def cli_service(settings: Settings) -> ConversationService:
    """The conversation service on ``settings``' Redis (which must be set)."""
    from core.conversation import ConversationService
    from core.job_client import QueueClient

    return ConversationService(settings, QueueClient(settings))
