"""The inline keyboard under a result and its callback data.

Callback data carries the job id (16 hex characters), never the prompt, so it stays far under
Telegram's 64-byte limit: ``rr:<job>`` (reroll), ``vd:<job>:<engine>`` (variation on one engine),
``st:<job>`` (show the job's settings).
"""

from __future__ import annotations

from dataclasses import dataclass

from telegram import InlineKeyboardButton, InlineKeyboardMarkup

from core.compose import ENGINE_TITLES
from core.ids import is_job_id
from core.jobs import JobRecord
from core.settings import KNOWN_ENGINES

MAX_CALLBACK_BYTES = 64


@dataclass(frozen=True)
class ButtonPress:
    """A decoded button: ``action`` is ``reroll``, ``variation`` or ``settings``."""

    action: str
    job_id: str
    engine: str | None = None


def result_keyboard(record: JobRecord) -> InlineKeyboardMarkup:
    """Reroll, one variation button per engine of the job, and show settings."""
    engines = [r.engine for r in record.results] or record.request.engines
    variations = [
        InlineKeyboardButton(
            f"{ENGINE_TITLES.get(engine, engine)} variation", callback_data=f"vd:{record.id}:{engine}"
        )
        for engine in engines
        if engine in KNOWN_ENGINES
    ]
    rows = [
        [InlineKeyboardButton("🎲 Reroll", callback_data=f"rr:{record.id}")],
        *([variations] if variations else []),
        [InlineKeyboardButton("⚙️ Settings", callback_data=f"st:{record.id}")],
    ]
    return InlineKeyboardMarkup(rows)


def parse_callback(data: str) -> ButtonPress:
    """Decode callback data; raises ``ValueError`` for anything we did not put on a button."""
    parts = data.split(":")
    if len(data.encode()) > MAX_CALLBACK_BYTES or len(parts) < 2 or not is_job_id(parts[1]):
        raise ValueError(f"unknown button {data[:70]!r}")
    match parts:
        case ["rr", job_id]:
            return ButtonPress("reroll", job_id)
        case ["vd", job_id, engine] if engine in KNOWN_ENGINES:
            return ButtonPress("variation", job_id, engine)
        case ["st", job_id]:
            return ButtonPress("settings", job_id)
    raise ValueError(f"unknown button {data[:70]!r}")
