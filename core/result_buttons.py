"""The buttons under a result, defined once: every front-end renders these rows and reads a pressed
button back with :func:`read_button` (then passes the action to the conversation service, which
checks that the job belongs to the chat: button data comes from the client and can be forged).

Button data carries the job id and a picture number, never the prompt, so it stays within
Telegram's 64-byte ``callback_data`` (and Discord's 100-character ``custom_id``):

- ``u:<job>:<i>`` U-n, post picture ``i`` (0-based) full size · ``v:<job>:<i>`` V-n, a variation
- ``rr:<job>`` 🔄 reroll · ``i:<job>`` ℹ️ Info · ``rx:<job>:<i>`` ✏️ Remix (ask for the new prompt)
- ``up:<job>:<i>:<engine>`` Upscale ×2 of one engine's picture

Older results carry older data, still read: ``vd:<job>:<engine>`` (Telegram's per-engine
variation), ``st:<job>`` (Telegram's settings), ``ib:rr|vd|vf|info:<job>`` (Discord's).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from core.compose import ENGINE_TITLES
from core.conversation.actions import Again, JobInfo, Pick, RemixAsk, Upscale, Vary
from core.errors import InputError
from core.ids import is_job_id
from core.jobs import JobRecord
from core.settings import KNOWN_ENGINES

__all__ = [
    "MAX_DATA_BYTES",
    "ResultButton",
    "ButtonAction",
    "picked_buttons",
    "read_button",
    "result_buttons",
]

#: Telegram's limit on ``callback_data`` (Discord allows 100 characters of ``custom_id``).
MAX_DATA_BYTES = 64
#: Buttons in one row at most (Discord's action row limit).
ROW_LENGTH = 5
UNKNOWN_BUTTON_TEXT = "That button is not one of mine (or is from a newer version); send the prompt again."
#: Discord's old per-engine variation buttons (``ib:vd:<job>``, ``ib:vf:<job>``).
_OLD_DISCORD_VARIATIONS = {"vd": "dfgan", "vf": "diffusion"}

ButtonAction = Again | JobInfo | Pick | Vary | RemixAsk | Upscale
"""What a button asks for: an action for ``ConversationService.handle`` (RemixAsk included)."""


@dataclass(frozen=True)
class ResultButton:
    """One button: its ``label`` and the ``data`` a press sends back (<= :data:`MAX_DATA_BYTES`)."""

    label: str
    data: str


def _rows(buttons: list[ResultButton]) -> list[list[ResultButton]]:
    """``buttons`` in rows of at most :data:`ROW_LENGTH`."""
    return [buttons[i : i + ROW_LENGTH] for i in range(0, len(buttons), ROW_LENGTH)]


def _engines(record: JobRecord) -> list[str]:
    """The engines whose pictures the job has (its requested engines until it has results)."""
    return [r.engine for r in record.results if r.image_keys] or list(record.request.engines)


def result_buttons(record: JobRecord) -> list[list[ResultButton]]:
    """The rows under a delivered result: [U1..Un] (only when the job has several pictures),
    [V1..Vn], then [🔄, ℹ️ Info, ✏️ Remix] (a remix of picture 1)."""
    job, count = record.id, record.request.count
    picks = [ResultButton(f"U{i + 1}", f"u:{job}:{i}") for i in range(count)] if count > 1 else []
    variations = [ResultButton(f"V{i + 1}", f"v:{job}:{i}") for i in range(count)]
    last = [
        ResultButton("🔄", f"rr:{job}"),
        ResultButton("ℹ️ Info", f"i:{job}"),
        ResultButton("✏️ Remix", f"rx:{job}:0"),
    ]
    return [*_rows(picks), *_rows(variations), last]


def picked_buttons(record: JobRecord, index: int) -> list[list[ResultButton]]:
    """The rows under picture ``index`` (0-based) posted on its own: an Upscale ×2 per engine (the
    label names the engine when there are several), Vary and ✏️ Remix."""
    engines = _engines(record)
    upscales = [
        ResultButton(
            "Upscale ×2" + (f" {ENGINE_TITLES.get(e, e)}" if len(engines) > 1 else ""),
            f"up:{record.id}:{index}:{e}",
        )
        for e in engines
    ]
    more = [
        ResultButton("Vary", f"v:{record.id}:{index}"),
        ResultButton("✏️ Remix", f"rx:{record.id}:{index}"),
    ]
    return _rows([*upscales, *more])


def _index(word: str) -> int:
    if not word.isdigit() or len(word) > 3:
        raise ValueError(word)
    return int(word)


def _decode(parts: list[str]) -> ButtonAction:
    """The action of button data split at ``:`` (its job id already checked). Raises ValueError."""
    match parts:
        case ["u", job, i]:
            return Pick(job, _index(i))
        case ["v", job, i]:
            return Vary(job, _index(i))
        case ["rx", job, i]:
            return RemixAsk(job, _index(i))
        case ["up", job, i, engine] if engine in KNOWN_ENGINES:
            return Upscale(job, _index(i), engine)
        case ["rr", job] | ["ib", "rr", job]:
            return Again(job)
        case ["i", job] | ["st", job] | ["ib", "info", job]:
            return JobInfo(job)
        case ["vd", job, engine] if engine in KNOWN_ENGINES:
            return Again(job, engine)
        case ["ib", ("vd" | "vf") as code, job]:
            return Again(job, _OLD_DISCORD_VARIATIONS[code])
    raise ValueError(parts[0])


def read_button(data: str, channel_is_nsfw: bool | None = None) -> ButtonAction:
    """The action button ``data`` asks for, new or old (see the module's docstring); a drawing
    action carries ``channel_is_nsfw`` (Discord's channel flag; elsewhere None).

    Raises:
        InputError: ``unknown_button`` for data no result button of ours carries.
    """
    parts = data.split(":")
    job_at = 2 if parts[0] == "ib" else 1
    try:
        if len(data.encode()) > MAX_DATA_BYTES or len(parts) <= job_at or not is_job_id(parts[job_at]):
            raise ValueError(data[:8])
        action = _decode(parts)
    except ValueError:
        raise InputError("unknown_button", UNKNOWN_BUTTON_TEXT) from None
    if isinstance(action, Again | Vary | Upscale) and channel_is_nsfw is not None:
        action = replace(action, channel_is_nsfw=channel_is_nsfw)
    return action
