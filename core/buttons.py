"""The one check every result button passes before it acts: the job exists and belongs to the chat
the button was pressed in. Button data comes from the client and can be forged (a Discord
``custom_id``, a Telegram ``callback_data``), so a press must never read or reuse another chat's job.
"""

from __future__ import annotations

from core.errors import InputError, JobNotFound
from core.jobs import JobRecord
from core.store import JobStore

EXPIRED_TEXT = "That picture has expired; send the prompt again."
NOT_THIS_CHAT_TEXT = "That button does not belong to this chat."
#: A button under a message the bot can no longer reply to (Telegram: an inaccessible message).
TOO_OLD_TEXT = "That picture is too old to reuse; send the prompt again."


def pressed_job(jobs: JobStore, job_id: str, platform: str, chat_id: str | None) -> JobRecord:
    """The job a button under a result names, if it was posted in ``platform``/``chat_id``.

    ``chat_id`` is the chat (Telegram) or the channel, a thread's parent channel (Discord) the
    button was pressed in; None when the platform did not say. Raises :class:`InputError`
    ``expired`` or ``not_this_chat`` (the same answer whether the job is another chat's or unknown
    to this one, so a forged press learns nothing about other chats).
    """
    try:
        record = jobs.get(job_id)
    except JobNotFound:
        raise InputError("expired", EXPIRED_TEXT) from None
    conversation = record.request.conversation
    if chat_id is None or conversation.platform != platform or conversation.chat_id != str(chat_id):
        raise InputError("not_this_chat", NOT_THIS_CHAT_TEXT)
    return record


def shown_job(jobs: JobStore, job_id: str, platform: str, chat_id: str | None, user: str) -> JobRecord:
    """The job ``/show`` names: one posted in ``platform``/``chat_id`` (as :func:`pressed_job`), or
    ``user``'s own from any chat. Anything else gets the same answers as a forged button."""
    try:
        return pressed_job(jobs, job_id, platform, chat_id)
    except InputError as refused:
        if refused.code != "not_this_chat":
            raise
        record = jobs.get(job_id)
        if record.request.user != user:
            raise
        return record
