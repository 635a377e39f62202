"""Delivery to the web chat: the result joins the conversation's history, which browsers poll."""

from __future__ import annotations

from core.delivery import DeliveryContext
from core.jobs import JobRecord, JobStatus


def send(record: JobRecord, ctx: DeliveryContext) -> None:
    """Append the job's outcome to its web conversation (idempotency is the deliver task's job)."""
    conv = record.request.conversation
    event: dict[str, object] = {"role": "bot", "job_id": record.id, "status": record.status.value}
    if record.status == JobStatus.FAILED:
        event["text"] = record.error or "Something went wrong while drawing."
    elif record.status == JobStatus.CANCELLED:
        event["text"] = "Cancelled."
    ctx.history.append("web", conv.chat_id, event)
