"""The bot's handlers: small module-level async functions, all registered in :func:`register`.

Each turns an update into an action of the conversation service (:mod:`core.conversation`) and
replies with the service's answer; nothing here decides anything or writes a user-facing text.

- ``/imagine <prompt>`` anywhere (groups, forum topics, private chats); in a private chat any plain
  text message is a prompt too.
- A picture to draw from (image-to-image): a photo (or an image sent as a file) with the prompt as
  its caption (in groups the caption must start with ``/imagine``), or ``/imagine <prompt>`` as a
  reply to one. It is fetched and stored by ``photos.py``; a bad picture gets its specific answer.
- ``/queue``, ``/cancel [job_id]``, ``/settings [--engine ... | reset]``, ``/models``, ``/help``,
  ``/show <job id>`` (a job's result again, with its buttons).
- ``/retrain``, ``/model [list|promote VERSION|rollback]`` and ``/nsfw [withhold|spoiler|allow|default]``:
  admins only.
- The buttons under a result (core's rows, :mod:`core.result_buttons`): U-n posts one picture full
  size, V-n queues a variation, 🔄 a reroll, ℹ️ Info shows the settings, ✏️ Remix asks for the new
  prompt; under a picked picture Upscale ×2, Vary and ✏️ Remix. Older results' buttons still work.
- Remix: text that replies to the remix question, or to a result of ours, is the new prompt of a
  variation of that picture.

Every answer is a reply to the user's message in the same chat and forum topic.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

from telegram import CallbackQuery, Message, MessageEntity, Update
from telegram.constants import ChatType
from telegram.error import TelegramError
from telegram.ext import (
    Application,
    CallbackQueryHandler,
    CommandHandler,
    ContextTypes,
    MessageHandler,
    filters,
)

from bots.telegram.api import replying_to, thread_id_of
from bots.telegram.buttons import remix_of
from bots.telegram.photos import stored_picture
from bots.telegram.progress import ProgressTracker
from bots.telegram.results import ask_remix, asked_remix, post_picked, post_shown
from core.buttons import EXPIRED_TEXT, TOO_OLD_TEXT
from core.commands import is_retrain_cancel
from core.conversation import (
    Action,
    Caller,
    Cancel,
    ChannelNsfw,
    ConversationService,
    FromText,
    Help,
    Imagine,
    JobInfo,
    Pick,
    Picked,
    Prepared,
    Refused,
    RemixAsk,
    RemixPrompt,
    ResultShown,
    Retrain,
    RetrainCancel,
    Show,
    ShowModel,
    ShowModels,
    ShowQueue,
    UserSettings,
    Vary,
)
from core.conversation.replies import COMMANDS, QUEUEING_TEXT
from core.errors import InputError
from core.job_client import QUEUE_UNAVAILABLE_TEXT, UNAVAILABLE_ERRORS, QueueClient
from core.jobs import Conversation
from core.result_buttons import read_button
from core.settings import Settings

__all__ = ["COMMANDS", "TelegramHandlers", "register"]

log = logging.getLogger(__name__)
PLATFORM = "telegram"
#: Telegram's limits: a message's text, a callback query's alert.
MAX_TEXT = 4096
MAX_ALERT = 200


@dataclass
class TelegramHandlers:
    """What the handlers share (kept in ``application.bot_data["handlers"]``)."""

    settings: Settings
    queue: QueueClient
    service: ConversationService
    tracker: ProgressTracker


def handlers_of(context: ContextTypes.DEFAULT_TYPE) -> TelegramHandlers:
    """The bot's shared state (service, queue, progress tracker), kept in ``bot_data``."""
    return context.bot_data["handlers"]


def conversation_of(message: Message) -> Conversation:
    """Where the answers to ``message`` go: its chat and topic, as a reply to it."""
    thread_id = thread_id_of(message)
    return Conversation(
        platform=PLATFORM,
        chat_id=str(message.chat_id),
        thread_id=str(thread_id) if thread_id is not None else None,
        reply_to=str(message.message_id),
    )


def caller_of(update: Update, context: ContextTypes.DEFAULT_TYPE, conversation: Conversation) -> Caller:
    """Who sent ``update``, as the conversation service knows them (admin or not)."""
    user = update.effective_user
    return handlers_of(context).service.caller(str(user.id if user else 0), conversation)


def _command_body(message: Message) -> str:
    """The text (or a picture's caption) after ``/command`` (or ``/command@bot``), quotes and spacing
    kept for the parser."""
    text, entities = _text_of(message)
    for entity in entities:
        if entity.type == "bot_command" and entity.offset == 0:
            return text[entity.length :]
    return text


def _text_of(message: Message) -> tuple[str, tuple[MessageEntity, ...]]:
    """A message's text and its entities, or a picture's caption and the caption's."""
    if message.text is not None:
        return message.text, message.entities
    return message.caption or "", message.caption_entities


def _caption_command(message: Message) -> str | None:
    """The command a caption starts with (``imagine`` for ``/imagine`` or ``/imagine@this_bot``),
    "" for a command addressed to another bot, None when it starts with none."""
    text, entities = _text_of(message)
    for entity in entities:
        if entity.type == "bot_command" and entity.offset == 0:
            name, _, addressee = text[1 : entity.length].partition("@")
            mine = not addressee or addressee.lower() == (message.get_bot().username or "").lower()
            return name.lower() if mine else ""
    return None


async def reply(message: Message, text: str, **options: Any) -> Message:
    """Answer ``message`` in its chat and topic, quoting it (``options``: e.g. ``reply_markup``)."""
    return await message.get_bot().send_message(
        message.chat_id, text[:MAX_TEXT], **replying_to(message), **options
    )


async def answer(update: Update, context: ContextTypes.DEFAULT_TYPE, action: Action | FromText) -> None:
    """Run ``action`` for the sender of the update's message and reply with the service's answer."""
    message = update.effective_message
    if message is None:
        return
    caller = caller_of(update, context, conversation_of(message))
    result = await asyncio.to_thread(handlers_of(context).service.handle, caller, action)
    await reply(message, result.text)


# --- prompts ---------------------------------------------------------------------------------
async def imagine(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """``/imagine <prompt>``; as a reply to a photo, drawn from that photo."""
    message = update.effective_message
    if message:
        await _draw(update, context, _command_body(message), message.reply_to_message)


async def private_text(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """Plain text in a private chat is a prompt."""
    if update.effective_message:
        await _draw(update, context, update.effective_message.text or "")


async def picture_prompt(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """A photo (or an image file) whose caption is a prompt: any caption in a private chat, one that
    starts with ``/imagine`` in a group; a caption with another command is not a prompt."""
    message = update.effective_message
    if message is None:
        return
    command = _caption_command(message)
    if command == "imagine" or (command is None and message.chat.type == ChatType.PRIVATE):
        await _draw(update, context, _command_body(message), message)


async def _draw(
    update: Update, context: ContextTypes.DEFAULT_TYPE, text: str, picture: Message | None = None
) -> None:
    """Queue the prompt ``text``, drawn from ``picture``'s photo when it carries one (a bad picture
    gets its specific answer and nothing is queued)."""
    message = update.effective_message
    assert message is not None
    service = handlers_of(context).service
    try:
        image_key = await stored_picture(context.bot, service, picture)
    except InputError as exc:
        await reply(message, exc.message)
        return
    caller = caller_of(update, context, conversation_of(message))
    action = FromText(Imagine, text, image_key=image_key)
    prepared = await asyncio.to_thread(service.prepare, caller, action)
    if isinstance(prepared, Refused):
        await reply(message, prepared.text)
        return
    await _submit(context, prepared, message)


async def _submit(context: ContextTypes.DEFAULT_TYPE, prepared: Prepared, answer_to: Message) -> None:
    """Reply "Queued…", queue the request with that message's id, then show the position."""
    shared = handlers_of(context)
    status = await reply(answer_to, QUEUEING_TEXT)
    queued = await asyncio.to_thread(shared.service.submit, prepared, str(status.message_id))
    if isinstance(queued, Refused):  # rate limit, full queue, Redis down: the status message says so
        await status.edit_text(queued.text)
        return
    text = queued.text
    try:
        await status.edit_text(text)
    except TelegramError as exc:  # the job is queued either way; progress edits retry later
        ids = {"job_id": queued.record.id}
        log.info("job %s: could not show its position: %s", queued.record.id, exc, extra=ids)
        text = QUEUEING_TEXT
    shared.tracker.edited(status.chat_id)
    shared.tracker.track(context.application, queued.record.id, status.chat_id, status.message_id, text)


# --- commands --------------------------------------------------------------------------------
async def show_queue(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """``/queue``: the user's unfinished jobs with their positions."""
    await answer(update, context, ShowQueue())


async def cancel(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """``/cancel [job_id]``: cancel one of the user's own jobs (the latest when no id is given)."""
    await answer(update, context, FromText(Cancel, " ".join(context.args or [])))


async def user_settings(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """``/settings``: show, set (``--engine dfgan --steps 30``) or ``reset`` the user's defaults."""
    if update.effective_message:
        await answer(update, context, FromText(UserSettings, _command_body(update.effective_message)))


async def help_(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """``/help`` and ``/start``."""
    await answer(update, context, Help())


async def retrain(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """``/retrain dataset:<name> epochs:<n>`` (admins) queues a training run;
    ``/retrain cancel [run_id]`` cancels one (no id: the admin's latest unfinished run)."""
    if update.effective_message:
        body = _command_body(update.effective_message)
        await answer(update, context, FromText(RetrainCancel if is_retrain_cancel(body) else Retrain, body))


async def model(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """``/model``: admins only; the engines and models in use; ``/model list|promote VERSION|rollback
    [model:diffusion]``: the trained versions, promote one, go back to the one before."""
    if update.effective_message:
        await answer(update, context, FromText(ShowModel, _command_body(update.effective_message)))


async def models(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """``/models``: the diffusion models (``--model``) and LoRAs (``--lora``) on offer."""
    await answer(update, context, ShowModels())


async def nsfw(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """``/nsfw [withhold|spoiler|allow|default]``: admins only; show or set this chat's rule for
    pictures the safety checker flags."""
    if update.effective_message:
        await answer(update, context, FromText(ChannelNsfw, _command_body(update.effective_message)))


# --- buttons ----------------------------------------------------------------------------------
async def button(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """A button under a result (core's :func:`~core.result_buttons.read_button` reads it): Info
    answers in an alert; U-n posts the picture; ✏️ Remix asks for the new prompt; the others queue."""
    query = update.callback_query
    if query is None:
        return
    message = query.message
    try:
        action = read_button(query.data or "")
    except InputError as exc:
        await query.answer(exc.message[:MAX_ALERT], show_alert=True)
        return
    if message is None:
        await query.answer(EXPIRED_TEXT, show_alert=True)
        return
    # Callback data can be forged: the service acts only on a job of the chat the button is in.
    if isinstance(message, Message):
        conversation = conversation_of(message)
    else:  # too old for the bot to see: its chat is still known
        conversation = Conversation(platform=PLATFORM, chat_id=str(message.chat.id))
    caller = caller_of(update, context, conversation)
    service = handlers_of(context).service
    if isinstance(action, JobInfo):
        info = await asyncio.to_thread(service.handle, caller, action)
        await query.answer(info.text[:MAX_ALERT], show_alert=True)
        return
    if not isinstance(message, Message):  # too old to reply to
        await query.answer(TOO_OLD_TEXT, show_alert=True)
        return
    if isinstance(action, Pick | RemixAsk):
        await _show_picture_reply(context, query, caller, action, message)
        return
    prepared = await asyncio.to_thread(service.prepare, caller, action)
    if isinstance(prepared, Refused):
        await query.answer(prepared.text[:MAX_ALERT], show_alert=True)
        return
    await query.answer(prepared.text)
    await _submit(context, prepared, message)


async def _show_picture_reply(
    context: ContextTypes.DEFAULT_TYPE,
    query: CallbackQuery,
    caller: Caller,
    action: Pick | RemixAsk,
    message: Message,
) -> None:
    """U-n: post the picture under the result; ✏️ Remix: ask for the new prompt. A refusal (another
    chat's job, an expired one) is the query's alert."""
    shared = handlers_of(context)
    answer_ = await asyncio.to_thread(shared.service.handle, caller, action)
    if isinstance(answer_, RemixPrompt):
        await query.answer()
        await ask_remix(context.bot, shared.queue.redis, answer_, message, shared.settings.result_ttl_s)
        return
    if isinstance(answer_, Picked) and await post_picked(context.bot, shared.queue.images, answer_, message):
        await query.answer()
        return
    await query.answer(
        (answer_.text if isinstance(answer_, Refused) else EXPIRED_TEXT)[:MAX_ALERT], show_alert=True
    )


async def show(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """``/show <job id>``: the job's result again, with its buttons (a job of this chat or the
    caller's own)."""
    message = update.effective_message
    if message is None:
        return
    shared = handlers_of(context)
    caller = caller_of(update, context, conversation_of(message))
    shown = await asyncio.to_thread(shared.service.handle, caller, FromText(Show, _command_body(message)))
    if not isinstance(shown, ResultShown):
        await reply(message, shown.text)
    elif not await post_shown(context.bot, shared.queue.images, shown, message):
        await reply(message, EXPIRED_TEXT)


async def reply_text(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """Text that replies to a remix question, or to a result (or picked picture) of ours: the remix of
    that picture with this text as its prompt. Any other reply is what plain text is (a prompt in a
    private chat, nothing in a group)."""
    message = update.effective_message
    if message is None:
        return
    shared = handlers_of(context)
    target = message.reply_to_message
    asked = await asyncio.to_thread(asked_remix, shared.queue.redis, target)
    if asked is None and target is not None and target.from_user and target.from_user.id == context.bot.id:
        asked = remix_of(target)
    if asked is None:
        if message.chat.type == ChatType.PRIVATE:
            await private_text(update, context)
        return
    caller = caller_of(update, context, conversation_of(message))
    remix = Vary(asked.job_id, asked.index, prompt=message.text or "")
    prepared = await asyncio.to_thread(shared.service.prepare, caller, remix)
    if isinstance(prepared, Refused):
        await reply(message, prepared.text)
        return
    await _submit(context, prepared, message)


async def on_error(update: object, context: ContextTypes.DEFAULT_TYPE) -> None:
    """A handler that hit a Redis outage answers "the queue is unavailable"; anything else is logged."""
    if isinstance(context.error, UNAVAILABLE_ERRORS) and isinstance(update, Update):
        if update.callback_query is not None:
            await update.callback_query.answer(QUEUE_UNAVAILABLE_TEXT, show_alert=True)
        elif update.effective_message is not None:
            await reply(update.effective_message, QUEUE_UNAVAILABLE_TEXT)
        return
    log.error("handling an update failed", exc_info=context.error)


def register(application: Application, settings: Settings, queue: QueueClient) -> TelegramHandlers:
    """Add every handler of the bot to ``application``; returns what they share (tests inspect it)."""
    shared = TelegramHandlers(
        settings,
        queue,
        ConversationService(settings, queue),
        ProgressTracker(queue, settings.progress_interval_s),
    )
    application.bot_data["handlers"] = shared
    new = filters.UpdateType.MESSAGE  # an edited prompt is not a new request
    for names, handler in [
        ("imagine", imagine),
        ("queue", show_queue),
        ("cancel", cancel),
        ("settings", user_settings),
        (["help", "start"], help_),
        ("retrain", retrain),
        ("model", model),
        ("models", models),
        ("nsfw", nsfw),
        ("show", show),
    ]:
        application.add_handler(CommandHandler(names, handler, filters=new))
    application.add_handler(CallbackQueryHandler(button))
    replies = new & filters.REPLY & filters.TEXT & ~filters.COMMAND
    application.add_handler(MessageHandler(replies, reply_text))
    private = new & filters.ChatType.PRIVATE & filters.TEXT & ~filters.COMMAND
    application.add_handler(MessageHandler(private, private_text))
    pictures = new & (filters.PHOTO | filters.Document.IMAGE)
    application.add_handler(MessageHandler(pictures, picture_prompt))
    application.add_error_handler(on_error)
    return shared
