"""The buttons under a delivered image, shared by the sender (worker side) and the bot (gateway side).

A button's ``custom_id`` holds an action and a job id, never the prompt: ``ib:<action>:<job_id>``.
"""

from __future__ import annotations

import re
from typing import Any

from core.ids import HEX16

#: action -> (label, engines the new job uses; None: the original job's engines)
ACTIONS: dict[str, tuple[str, str | None]] = {
    "rr": ("Reroll", None),
    "vd": ("DF-GAN variation", "dfgan"),
    "vf": ("Diffusion variation", "diffusion"),
    "info": ("Show settings", None),
}
CUSTOM_ID = re.compile(rf"ib:(?P<action>{'|'.join(ACTIONS)}):(?P<job_id>{HEX16.pattern})")
ACTION_ROW = 1
BUTTON = 2
SECONDARY = 2


def custom_id(action: str, job_id: str) -> str:
    """The ``custom_id`` of button ``action`` for ``job_id``."""
    return f"ib:{action}:{job_id}"


def result_buttons(job_id: str, enabled_engines: list[str]) -> list[dict[str, Any]]:
    """One action row (Discord API JSON) with reroll, a variation per enabled engine, and settings."""
    buttons = []
    for action, (label, engine) in ACTIONS.items():
        if engine is not None and engine not in enabled_engines:
            continue
        buttons.append(
            {"type": BUTTON, "style": SECONDARY, "label": label, "custom_id": custom_id(action, job_id)}
        )
    return [{"type": ACTION_ROW, "components": buttons}]
