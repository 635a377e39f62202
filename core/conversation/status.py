"""The one status line of a job ("Queued — position 3", "Drawing — dfgan step 4/20", "Done").

Every front-end shows it: Telegram's status message, Discord's deferred answer, the web page's job
bubble (``status_text`` in the API's job JSON), ``/queue`` lists.
Two renderings of the same states: the short one for a message that already replies to the
prompt, and the titled one (``titled=True``), which also says what is drawn, for an answer that
stands alone.
"""

from __future__ import annotations

from core.fair_queue import Position
from core.jobs import JobRecord, JobStatus

_FINISHED = {JobStatus.DONE: "Done", JobStatus.FAILED: "Failed", JobStatus.CANCELLED: "Cancelled"}


def job_title(record: JobRecord) -> str:
    """What a job draws: “prompt” (engines, seed N)."""
    return f"“{record.request.prompt}” ({', '.join(record.request.engines)}, seed {record.seed})"


def status_line(
    record: JobRecord, position: int | None, notice: str | None = None, *, titled: bool = False
) -> str:
    """Where ``record`` stands: queue position (``notice``: no live worker can draw it yet), drawing
    progress, or how it ended."""
    what = f" {job_title(record)}" if titled else ""
    progress = record.progress
    if record.status == JobStatus.QUEUED:
        where = _where(position)
        if titled:
            return f"Queued{what}, {where}." + (f" {notice}" if notice else "")
        text = f"Queued — {where}" if position else "Queued — starting soon"
        return f"{text}\n{notice}" if notice else text
    if record.status == JobStatus.RUNNING:
        if progress is None:
            return f"Drawing{what}…"
        steps = f"{progress.engine} step {progress.step}/{progress.total}"
        return f"Drawing{what}: {steps}." if titled else f"Drawing — {steps}"
    ended = _FINISHED[record.status]
    if not titled:
        waiting = record.status == JobStatus.DONE and record.delivered_at is None
        return f"{ended} — finishing up…" if waiting else ended  # finishing: the result is being posted
    if record.status == JobStatus.FAILED:
        return f"{ended}:{what}: {record.error or 'unknown error'}"
    return f"{ended}:{what}."


def _where(position: int | None) -> str:
    """``position 4 of 12, about 40 s`` when the queue knows that much, else ``position 4``."""
    if isinstance(position, Position):
        return position.describe()
    return f"position {position or 1}"


def queue_line(record: JobRecord, position: int | None) -> str:
    """One line of ``/queue``: the id, the prompt (cut to 60 characters) and its status."""
    prompt = record.request.prompt
    prompt = prompt if len(prompt) <= 60 else prompt[:59] + "…"
    return f"• {record.id} “{prompt}” — {status_line(record, position)}"
