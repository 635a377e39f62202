"""One conversation, every front-end: typed actions in, typed replies out.

- :mod:`core.conversation.actions` — what a person can ask (``Imagine``, ``Cancel``, ``Again`` …).
- :mod:`core.conversation.caller` — who asks, and where answers go (``Caller``).
- :mod:`core.conversation.replies` — what the bot answers; every user-facing text is written there.
- :mod:`core.conversation.status` — the one job status line.
- :mod:`core.conversation.service` — ``ConversationService.handle(caller, action) -> reply``.
"""

from core.conversation import actions, replies
from core.conversation.actions import *  # noqa: F403 - the package's face: every action
from core.conversation.caller import Caller
from core.conversation.replies import *  # noqa: F403 - and every reply
from core.conversation.service import ConversationService
from core.conversation.status import job_title, queue_line, status_line

__all__ = [
    *actions.__all__,
    *replies.__all__,
    "Caller",
    "ConversationService",
    "job_title",
    "queue_line",
    "status_line",
]
