"""Delivery to the web chat: the result joins the conversation's history, which browsers poll."""

from __future__ import annotations

from core.delivery import POSTED, DeliveryContext, Notice
from core.jobs import Conversation, JobRecord, JobStatus

#: The web chat waits on the history it polls, not on an HTTP answer: nothing is ever half sent.
REPORTS_SENT = False


def send(record: JobRecord, ctx: DeliveryContext) -> str:
    """Append the job's outcome to its web conversation, unless it is there already.

    The check makes a repeated send harmless: a worker that died between appending and marking the
    job delivered leaves the event in the history, and the retry finds it instead of adding another.
    (The deliver task's lease keeps two sends of one job from running at once.)
    """
    conv = record.request.conversation
    if _told(ctx, conv, record.id):
        return POSTED
    ctx.history.append("web", conv.chat_id, result_event(record))
    return POSTED


def result_event(record: JobRecord) -> dict[str, object]:
    """The history event that tells a web conversation how job ``record`` ended (what :func:`send`
    appends; the generate task appends the same event when it delivers a web job itself)."""
    event: dict[str, object] = {"role": "bot", "job_id": record.id, "status": record.status.value}
    if record.status == JobStatus.FAILED:
        event["text"] = record.error or "Something went wrong while drawing."
    elif record.status == JobStatus.CANCELLED:
        event["text"] = "Cancelled."
    return event


def notify(conversation: Conversation, notice: Notice, ctx: DeliveryContext) -> None:
    """Add ``notice`` to the conversation's history (:class:`core.delivery.Outbox`). A training run's
    picture is shown from ``/api/runs/<run>/<picture>.png``; a notice about a job is added once."""
    if notice.job_id is not None and _told(ctx, conversation, notice.job_id):
        return
    event: dict[str, object] = {"role": "bot", "text": notice.text}
    if notice.job_id is not None:
        event["job_id"] = notice.job_id
    if notice.run_id is not None:
        event["run_id"] = notice.run_id
        if notice.picture is not None:
            event["image_url"] = f"/api/runs/{notice.run_id}/{notice.picture}.png"
    ctx.history.append("web", conversation.chat_id, event)


def _told(ctx: DeliveryContext, conversation: Conversation, job_id: str) -> bool:
    """Whether the conversation's history already has the bot's word on ``job_id``."""
    return ctx.history.told("web", conversation.chat_id, job_id)
