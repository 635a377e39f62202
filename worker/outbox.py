"""Which outbox (:class:`core.delivery.Outbox`) serves each platform, and best-effort notices.

Delivery (:mod:`worker.deliver`) and training progress (:mod:`worker.train_report`) both post through
here. Each platform's outbox is its bot's ``send.py``, which imports no torch; the CLI has nothing to
post to (it follows the job or run record).
"""

from __future__ import annotations

import importlib
import logging
from typing import cast

from core.delivery import POSTED, DeliveryContext, DeliveryFailed, Notice, Outbox
from core.jobs import Conversation, JobRecord
from worker.runtime import Runtime

log = logging.getLogger(__name__)

#: platform -> the module that is its outbox. Each lives with its bot and imports no torch.
OUTBOXES = {
    "web": "bots.web.send",
    "telegram": "bots.telegram.send",
    "discord": "bots.discord.send",
}


class _CliOutbox:
    """The CLI waits on the job (or run) record and reads the images from the store: nothing to post."""

    REPORTS_SENT = False

    @staticmethod
    def send(record: JobRecord, ctx: DeliveryContext) -> str:
        """Nothing to post; the CLI reads the record."""
        log.info("job %s (%s) is ready for the CLI", record.id, record.status.value)
        return POSTED

    @staticmethod
    def notify(conversation: Conversation, notice: Notice, ctx: DeliveryContext) -> None:
        """Nothing to post; the CLI follows the run record."""


def outbox_for(platform: str) -> Outbox:
    """The outbox of ``platform``; raises :class:`DeliveryFailed` for an unknown one."""
    if platform == "cli":
        return _CliOutbox()
    module_name = OUTBOXES.get(platform)
    if module_name is None:
        raise DeliveryFailed(f"no sender for platform {platform!r} in this release")
    return cast(Outbox, importlib.import_module(module_name))


def context(rt: Runtime) -> DeliveryContext:
    """A plain :class:`DeliveryContext` for this worker (no unconfirmed send, no ``on_sent``)."""
    return DeliveryContext(settings=rt.settings, images=rt.images, history=rt.history)


def tell(rt: Runtime, conversation: Conversation, notice: Notice) -> bool:
    """Post ``notice`` into ``conversation``, best effort: a notice that cannot be posted (no token on
    this worker, the platform refusing) is logged and False returned; the caller goes on."""
    try:
        outbox_for(conversation.platform).notify(conversation, notice, context(rt))
        return True
    except Exception as exc:  # noqa: BLE001 - best effort; the record has it all
        what = notice.picture or "a note"
        log.warning("could not post %s to %s: %s", what, conversation.platform, exc)
        return False
