"""One conversation, every front-end: typed actions in, typed replies out.

- :mod:`core.conversation.actions` — what a person can ask (``Imagine``, ``Cancel``, ``Again`` …).
- :mod:`core.conversation.caller` — who asks, and where answers go (``Caller``).
- :mod:`core.conversation.replies` — what the bot answers; every user-facing text is written there.
- :mod:`core.conversation.status` — the one job status line.
- :mod:`core.conversation.service` — ``ConversationService.handle(caller, action) -> reply``.
"""

from core.conversation.actions import (
    Action,
    Again,
    Cancel,
    FromText,
    Help,
    Imagine,
    JobInfo,
    Retrain,
    RetrainCancel,
    ShowModel,
    ShowQueue,
    UserSettings,
)
from core.conversation.caller import Caller
from core.conversation.replies import (
    Cancelled,
    HelpShown,
    JobList,
    JobSettings,
    ModelShown,
    Prepared,
    Queued,
    Refused,
    Reply,
    RetrainCancelled,
    RetrainQueued,
    SettingsShown,
)
from core.conversation.service import ConversationService
from core.conversation.status import job_title, queue_line, status_line

__all__ = [
    "Action",
    "Again",
    "Caller",
    "Cancel",
    "Cancelled",
    "ConversationService",
    "FromText",
    "Help",
    "HelpShown",
    "Imagine",
    "JobInfo",
    "JobList",
    "JobSettings",
    "ModelShown",
    "Prepared",
    "Queued",
    "Refused",
    "Reply",
    "Retrain",
    "RetrainCancel",
    "RetrainCancelled",
    "RetrainQueued",
    "SettingsShown",
    "ShowModel",
    "ShowQueue",
    "UserSettings",
    "job_title",
    "queue_line",
    "status_line",
]
