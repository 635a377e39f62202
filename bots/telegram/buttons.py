"""The inline keyboards under a result and under a picked picture, and reading a press back.

The rows are core's (:mod:`core.result_buttons`), one definition for every platform: U1..Un, V1..Vn,
🔄 / ℹ️ Info / ✏️ Remix under a result; Upscale ×2, Vary, ✏️ Remix under a picked picture. Their data
carries the job id and a picture number, never the prompt, so it stays within Telegram's 64-byte
``callback_data``; older results' data (``rr:``, ``vd:``, ``st:``) still reads.
"""

from __future__ import annotations

from telegram import InlineKeyboardButton, InlineKeyboardMarkup, Message

from core.conversation import RemixAsk
from core.errors import InputError
from core.jobs import JobRecord
from core.result_buttons import ResultButton, picked_buttons, read_button, result_buttons


def keyboard(rows: list[list[ResultButton]]) -> InlineKeyboardMarkup:
    """Telegram's inline keyboard for core's button rows."""
    return InlineKeyboardMarkup(
        [[InlineKeyboardButton(b.label, callback_data=b.data) for b in row] for row in rows]
    )


def result_keyboard(record: JobRecord) -> InlineKeyboardMarkup:
    """The buttons under a delivered result (:func:`core.result_buttons.result_buttons`)."""
    return keyboard(result_buttons(record))


def picked_keyboard(record: JobRecord, index: int) -> InlineKeyboardMarkup:
    """The buttons under picture ``index`` posted on its own (:func:`~core.result_buttons.picked_buttons`)."""
    return keyboard(picked_buttons(record, index))


def remix_of(message: Message | None) -> RemixAsk | None:
    """The picture a reply to ``message`` remixes, when ``message`` is a result (or a picked picture)
    with our buttons: its ✏️ Remix button's picture, else picture 1 of the job its buttons name
    (an older result); None for any other message."""
    markup = message.reply_markup if message is not None else None
    if markup is None:
        return None
    job_id = None
    for row in markup.inline_keyboard:
        for button in row:
            try:
                action = read_button(str(button.callback_data or ""))
            except InputError:
                continue
            if isinstance(action, RemixAsk):
                return action
            job_id = job_id or action.job_id
    return RemixAsk(job_id, 0) if job_id else None
