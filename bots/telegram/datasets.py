"""``/dataset`` on Telegram (community datasets, :mod:`core.datasets_chat`): admins build datasets
from photos in the chat.

- a photo (or an image sent as a file) whose caption is ``/dataset add NAME caption…``;
- ``/dataset add NAME caption…`` as a reply to a photo;
- ``/dataset add NAME`` alone, then photos each with its caption (``/dataset done`` stops);
- ``/dataset list``, ``/dataset show NAME`` (the contact sheet as a photo), ``/dataset remove NAME ITEM``.

The picture is fetched, checked and stored by key (:mod:`bots.telegram.photos`); only the key
reaches the service. The photo handlers run in group -1, before the prompt handlers, and stop a
photo they took there.
"""

from __future__ import annotations

import asyncio

from telegram import InputFile, Message, ReplyParameters, Update
from telegram.ext import (
    Application,
    ApplicationHandlerStop,
    CommandHandler,
    ContextTypes,
    MessageHandler,
    filters,
)

from bots.telegram.handlers import caller_of, conversation_of, handlers_of, reply, thread_id_of
from bots.telegram.photos import picture_of, stored_picture
from core.conversation import Refused
from core.datasets_chat import Collecting, DatasetAdd, DatasetCommand, DatasetShown, is_dataset_command
from core.errors import InputError

#: Telegram's limit on a photo's caption.
MAX_CAPTION = 1024
#: Photo handlers run in this group, before the prompt handlers (group 0).
GROUP = -1


async def _stored(context: ContextTypes.DEFAULT_TYPE, message: Message | None) -> str | None:
    """The upload key of ``message``'s picture (None: it has none); InputError for a bad one."""
    return await stored_picture(context.bot, handlers_of(context).service, message)


async def _answer(
    update: Update, context: ContextTypes.DEFAULT_TYPE, text: str, picture: Message | None
) -> None:
    """Run ``/dataset …`` ``text`` with ``picture``'s photo (if any) and reply."""
    message = update.effective_message
    if message is None:
        return
    caller = caller_of(update, context, conversation_of(message))
    service = handlers_of(context).service
    key: str | None = None
    words = text.split()
    if caller.is_admin and len(words) > 1 and words[1].lower() == "add":
        try:
            key = await _stored(context, picture)
        except InputError as exc:
            await reply(message, Refused.of(exc).text)
            return
    result = await asyncio.to_thread(service.handle, caller, DatasetCommand(text, key))
    await _send(message, result)


async def _send(message: Message, result: object) -> None:
    if isinstance(result, DatasetShown):
        await message.get_bot().send_photo(
            message.chat_id,
            InputFile(result.sheet_png, filename=f"{result.name}.png"),
            caption=result.text[:MAX_CAPTION],
            message_thread_id=thread_id_of(message),
            reply_parameters=ReplyParameters(message.message_id, allow_sending_without_reply=True),
        )
        return
    await reply(message, getattr(result, "text", ""))


async def dataset(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """``/dataset …`` as a text message (``add`` takes the photo it replies to)."""
    message = update.effective_message
    if message is not None:
        await _answer(update, context, message.text or "", message.reply_to_message)


async def dataset_photo(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """A photo captioned ``/dataset …``, or one an admin sends while collecting for a dataset."""
    message = update.effective_message
    if message is None or picture_of(message) is None:
        return
    caption = message.caption or ""
    if is_dataset_command(caption):
        await _answer(update, context, caption, message)
        raise ApplicationHandlerStop
    caller = caller_of(update, context, conversation_of(message))
    collecting = Collecting(handlers_of(context).queue.redis)
    name = await asyncio.to_thread(collecting.current, caller.user, caller.conversation.chat_id)
    if name is None:
        return  # not ours: a prompt with a picture, for the prompt handlers
    try:
        key = await _stored(context, message)
    except InputError as exc:
        await reply(message, exc.message)
        raise ApplicationHandlerStop from None
    service = handlers_of(context).service
    result = await asyncio.to_thread(service.handle, caller, DatasetAdd(name, caption, key))
    await _send(message, result)
    raise ApplicationHandlerStop


def register_datasets(application: Application) -> None:
    """Add the ``/dataset`` handlers (after :func:`bots.telegram.handlers.register`)."""
    new = filters.UpdateType.MESSAGE
    application.add_handler(CommandHandler("dataset", dataset, filters=new))
    pictures = new & (filters.PHOTO | filters.Document.IMAGE)
    application.add_handler(MessageHandler(pictures, dataset_photo), group=GROUP)
