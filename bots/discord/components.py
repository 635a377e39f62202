"""Discord's rendering of the buttons under a result, shared by the sender (worker side) and the bot
(gateway side). The buttons themselves are core's (:mod:`core.result_buttons`); here they become
Discord action rows (at most 5 buttons a row, 5 rows a message).

A button's ``custom_id`` is core's button data as it is (``u:<job>:<i>``, ``rr:<job>`` …): it holds
the action, the job id and a picture number, never the prompt, so a press works after a restart and
for old jobs. Results posted before carry ``ib:<action>:<job>``, still read (:data:`CUSTOM_ID`).
The remix modal's ``custom_id`` is ``ib:remix:<job>:<i>`` (:func:`remix_modal_id`).
"""

from __future__ import annotations

import re
from typing import Any

from core.ids import HEX16
from core.jobs import JobRecord
from core.result_buttons import ResultButton, picked_buttons, result_buttons

#: Every button data of ours, new and old (core.result_buttons.read_button decodes it).
CUSTOM_ID = re.compile(
    rf"(?P<data>(?:ib:(?:rr|vd|vf|info)|u|v|rx|up|rr|i|vd|st):{HEX16.pattern}(?::[0-9]{{1,3}})?(?::[a-z-]{{1,20}})?)"
)
#: The remix modal: the job and the picture it remixes.
REMIX_MODAL_ID = re.compile(rf"ib:remix:(?P<job_id>{HEX16.pattern}):(?P<index>[0-9]{{1,3}})")
ACTION_ROW = 1
BUTTON = 2
SECONDARY = 2
MAX_ROWS = 5
MAX_ROW_LENGTH = 5


def action_rows(rows: list[list[ResultButton]]) -> list[dict[str, Any]]:
    """``rows`` of core's buttons as Discord API JSON (action rows of secondary buttons)."""
    return [
        {
            "type": ACTION_ROW,
            "components": [
                {"type": BUTTON, "style": SECONDARY, "label": b.label, "custom_id": b.data}
                for b in row[:MAX_ROW_LENGTH]
            ],
        }
        for row in rows[:MAX_ROWS]
    ]


def result_components(record: JobRecord) -> list[dict[str, Any]]:
    """The action rows under ``record``'s delivered result: U1–Un, V1–Vn, 🔄 / ℹ️ Info / ✏️ Remix."""
    return action_rows(result_buttons(record))


def picked_components(record: JobRecord, index: int) -> list[dict[str, Any]]:
    """The action rows under picture ``index`` (0-based) posted on its own: Upscale, Vary, Remix."""
    return action_rows(picked_buttons(record, index))


def remix_modal_id(job_id: str, index: int) -> str:
    """The ``custom_id`` of the modal that asks for the new prompt of picture ``index`` of ``job_id``."""
    return f"ib:remix:{job_id}:{index}"
