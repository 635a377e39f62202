"""Delivery to the web chat: the result joins the conversation's history, which browsers poll."""

from __future__ import annotations

from core.delivery import POSTED, DeliveryContext
from core.jobs import JobRecord, JobStatus


def send(record: JobRecord, ctx: DeliveryContext) -> str:
    """Append the job's outcome to its web conversation, unless it is there already.

    The check makes a repeated send harmless: a worker that died between appending and marking the
    job delivered leaves the event in the history, and the retry finds it instead of adding another.
    (The deliver task's lease keeps two sends of one job from running at once.)
    """
    conv = record.request.conversation
    if any(
        event.get("role") == "bot" and event.get("job_id") == record.id
        for event in ctx.history.read("web", conv.chat_id)
    ):
        return POSTED
    event: dict[str, object] = {"role": "bot", "job_id": record.id, "status": record.status.value}
    if record.status == JobStatus.FAILED:
        event["text"] = record.error or "Something went wrong while drawing."
    elif record.status == JobStatus.CANCELLED:
        event["text"] = "Cancelled."
    ctx.history.append("web", conv.chat_id, event)
    return POSTED
