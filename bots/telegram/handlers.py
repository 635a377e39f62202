"""The bot's handlers: small async functions, all registered in :func:`register`.

- ``/imagine <prompt>`` anywhere (groups, forum topics, private chats); in a private chat any plain
  text message is a prompt too.
- ``/queue``, ``/cancel [job_id]``, ``/settings [--engine ... | reset]``, ``/help``.
- ``/retrain`` and ``/model``: admins only.
- The buttons under a result: reroll, a variation on one engine, show settings.

Every answer is a reply to the user's message in the same chat and forum topic. Bad input gets the
specific message of its :class:`~core.errors.InputError` and nothing is queued.
"""

from __future__ import annotations

import asyncio
import logging

from telegram import Message, ReplyParameters, Update
from telegram.error import TelegramError
from telegram.ext import (
    Application,
    CallbackQueryHandler,
    CommandHandler,
    ContextTypes,
    MessageHandler,
    filters,
)

from bots.telegram.buttons import ButtonPress, parse_callback
from bots.telegram.progress import ProgressTracker, status_text
from core.buttons import EXPIRED_TEXT, pressed_job
from core.commands import is_retrain_cancel, parse_retrain, parse_retrain_cancel
from core.errors import InputError, JobNotFound
from core.heartbeats import job_notice
from core.ids import is_job_id
from core.job_client import QUEUE_UNAVAILABLE_TEXT, UNAVAILABLE_ERRORS, QueueClient
from core.jobs import Conversation, JobRecord, JobRequest
from core.preferences import Preferences, PreferenceStore
from core.prompt import FLAG_HELP
from core.settings import Settings
from core.training_client import TrainingClient, cancelled_text, queued_text
from core.validation import request_from_text, validate_request

log = logging.getLogger(__name__)
PLATFORM = "telegram"

HELP = (
    "Send me a description and I draw it twice: with DF-GAN and with a diffusion model.\n\n"
    "In a private chat just type the prompt; in groups use /imagine <prompt>.\n"
    f"Options: {FLAG_HELP}.\n\n"
    "/queue — your pictures in progress\n"
    "/cancel [job id] — cancel one (your latest if no id)\n"
    "/settings [--engine dfgan --steps 30 | reset] — your defaults\n"
    "/help — this text"
)
COMMANDS = [
    ("imagine", "Draw a picture: /imagine a red bird --seed 42"),
    ("queue", "Your pictures in progress"),
    ("cancel", "Cancel a picture (your latest if no id)"),
    ("settings", "Your defaults: --engine, --steps, --size, --n, or reset"),
    ("help", "How to use this bot"),
]


def _user(update: Update) -> str:
    user = update.effective_user
    return f"{PLATFORM}:{user.id if user else 0}"


def _thread_id(message: Message) -> int | None:
    """The forum topic of ``message``; None outside topics (replies there need no thread id)."""
    return message.message_thread_id if message.is_topic_message else None


def _conversation(message: Message) -> Conversation:
    """Where the answers to ``message`` go: its chat and topic, as a reply to it."""
    thread_id = _thread_id(message)
    return Conversation(
        platform=PLATFORM,
        chat_id=str(message.chat_id),
        thread_id=str(thread_id) if thread_id is not None else None,
        reply_to=str(message.message_id),
    )


def _command_body(message: Message) -> str:
    """The text after ``/command`` (or ``/command@bot``), quotes and spacing kept for the parser."""
    text = message.text or ""
    for entity in message.entities:
        if entity.type == "bot_command" and entity.offset == 0:
            return text[entity.length :]
    return text


def _job_line(record: JobRecord, position: int | None) -> str:
    prompt = record.request.prompt
    prompt = prompt if len(prompt) <= 60 else prompt[:59] + "…"
    return f"• {record.id} “{prompt}” — {status_text(record, position)}"


class TelegramHandlers:
    """The handlers and what they share: settings, the queue client, preferences, the progress tracker."""

    def __init__(self, application: Application, settings: Settings, queue: QueueClient) -> None:
        self.application = application
        self.settings = settings
        self.queue = queue
        self.prefs = PreferenceStore(queue.redis)
        self.tracker = ProgressTracker(queue, settings.progress_interval_s)

    # --- replies -----------------------------------------------------------------------------
    @staticmethod
    async def reply(message: Message, text: str) -> Message:
        """Answer ``message`` in its chat and topic, quoting it."""
        return await message.get_bot().send_message(
            message.chat_id,
            text[:4096],
            message_thread_id=_thread_id(message),
            reply_parameters=ReplyParameters(message.message_id, allow_sending_without_reply=True),
        )

    # --- prompts -----------------------------------------------------------------------------
    async def imagine(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        """``/imagine <prompt>``."""
        if update.effective_message:
            await self._prompt(update, update.effective_message, _command_body(update.effective_message))

    async def private_text(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        """Plain text in a private chat is a prompt."""
        if update.effective_message:
            await self._prompt(update, update.effective_message, update.effective_message.text or "")

    async def _prompt(self, update: Update, message: Message, text: str) -> None:
        user = _user(update)
        try:
            prefs = await asyncio.to_thread(self.prefs.get, user)
            request = request_from_text(text, self.settings, user, _conversation(message), defaults=prefs)
        except InputError as exc:
            await self.reply(message, exc.message)
            return
        await self._submit(request, message)

    async def _submit(self, request: JobRequest, answer_to: Message) -> None:
        """Reply "Queued…", queue ``request`` with that message's id, then show the position."""
        status = await self.reply(answer_to, "Queued…")
        conversation = request.conversation.model_copy(update={"status_message_id": str(status.message_id)})
        request = request.model_copy(update={"conversation": conversation})
        try:
            record = await asyncio.to_thread(self.queue.submit, request)
        except InputError as exc:
            await status.edit_text(exc.message)
            return
        except UNAVAILABLE_ERRORS:  # Redis is down: the "Queued…" message says so instead
            await status.edit_text(QUEUE_UNAVAILABLE_TEXT)
            return
        position = await asyncio.to_thread(self.queue.position, record.id)
        notice = await asyncio.to_thread(job_notice, self.queue.redis, record)  # no worker up yet?
        text = status_text(record, position, notice)
        try:
            await status.edit_text(text)
        except TelegramError as exc:  # the job is queued either way; progress edits retry later
            log.info("job %s: could not show its position: %s", record.id, exc, extra={"job_id": record.id})
            text = "Queued…"
        self.tracker.edited(status.chat_id)
        self.tracker.track(self.application, record.id, status.chat_id, status.message_id, text)

    # --- commands ----------------------------------------------------------------------------
    async def show_queue(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        """``/queue``: the user's unfinished jobs with their positions."""
        message = update.effective_message
        if message is None:
            return
        jobs = await asyncio.to_thread(self.queue.user_jobs, _user(update))
        if not jobs:
            await self.reply(message, "You have no pictures waiting or in progress.")
            return
        await self.reply(message, "\n".join(_job_line(record, position) for record, position in jobs))

    async def cancel(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        """``/cancel [job_id]``: cancel one of the user's own jobs (the latest when no id is given)."""
        message = update.effective_message
        if message is None:
            return
        user = _user(update)
        args = context.args or []
        try:
            if args:
                job_id = args[0].strip().lower()
                if not is_job_id(job_id):
                    raise JobNotFound(job_id)
            else:
                jobs = await asyncio.to_thread(self.queue.user_jobs, user)
                if not jobs:
                    raise InputError("nothing_to_cancel", "You have no pictures waiting or in progress.")
                job_id = jobs[-1][0].id
            record = await asyncio.to_thread(self.queue.cancel, job_id, user)
        except JobNotFound:
            await self.reply(message, "No such job (it may have expired). /queue lists yours.")
            return
        except InputError as exc:
            await self.reply(message, exc.message)
            return
        await self.reply(message, f"Cancelled {record.id} (“{record.request.prompt[:60]}”).")

    async def user_settings(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        """``/settings``: show, set (``--engine dfgan --steps 30``) or ``reset`` the user's defaults."""
        message = update.effective_message
        if message is None:
            return
        user = _user(update)
        body = _command_body(message).strip()
        try:
            if body:
                prefs = await asyncio.to_thread(self.prefs.set_from_text, user, body, self.settings)
            else:
                prefs = await asyncio.to_thread(self.prefs.get, user)
        except InputError as exc:
            await self.reply(message, exc.message)
            return
        await self.reply(message, self._describe_prefs(prefs))

    def _describe_prefs(self, prefs: Preferences) -> str:
        s = self.settings
        engines = ",".join(prefs.engines or s.default_engines)
        return (
            f"Your defaults: --engine {engines} --steps {prefs.steps or s.default_steps} "
            f"--size {prefs.size or s.default_size} --n {prefs.count or 1}\n"
            "Change them with /settings --engine dfgan --steps 30, or /settings reset."
        )

    async def help(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        """``/help`` and ``/start``."""
        if update.effective_message:
            await self.reply(update.effective_message, HELP)

    async def retrain(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        """``/retrain dataset:<name> epochs:<n>``: admins only; queues a run on the ``train`` queue.
        ``/retrain cancel [run_id]`` cancels one (no id: the admin's latest unfinished run)."""
        message = update.effective_message
        if message is None:
            return
        user_id = _user(update).split(":", 1)[1]
        if is_retrain_cancel(_command_body(message)):
            await self._retrain_cancel(update, message, user_id)
            return
        try:
            request = parse_retrain(_command_body(message), self.settings, PLATFORM, user_id)
        except InputError as exc:
            await self.reply(message, exc.message)
            return
        client = TrainingClient(self.settings, client=self.queue.redis, producer=self.queue.producer)
        try:
            run = await asyncio.to_thread(
                client.submit_retrain, request, _user(update), _conversation(message)
            )
        except InputError as exc:
            await self.reply(message, exc.message)
            return
        await self.reply(message, queued_text(run))

    async def _retrain_cancel(self, update: Update, message: Message, user_id: str) -> None:
        client = TrainingClient(self.settings, client=self.queue.redis, producer=self.queue.producer)
        try:
            run_id = parse_retrain_cancel(_command_body(message), self.settings, PLATFORM, user_id)
            run = await asyncio.to_thread(client.cancel_from_chat, run_id, _user(update))
        except InputError as exc:
            await self.reply(message, exc.message)
            return
        await self.reply(message, cancelled_text(run))

    async def model(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        """``/model``: admins only; model management from chat comes with the training queue."""
        message = update.effective_message
        if message is None:
            return
        if not self.settings.is_admin(PLATFORM, _user(update).split(":", 1)[1]):
            await self.reply(message, "Only admins can manage the model.")
            return
        await self.reply(
            message,
            "Model management from chat arrives with the training-queue release. "
            "For now run: imaginebot models list",
        )

    # --- buttons -----------------------------------------------------------------------------
    async def button(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        """A button under a result: answers the callback query, then queues or shows settings."""
        query = update.callback_query
        if query is None:
            return
        message = query.message
        try:
            press = parse_callback(query.data or "")
        except ValueError:
            await query.answer(EXPIRED_TEXT, show_alert=True)
            return
        # Callback data can be forged by a client: only act on a job from the chat the button is in.
        chat_id = str(message.chat.id) if message is not None else None
        try:
            record = await asyncio.to_thread(pressed_job, self.queue.jobs, press.job_id, PLATFORM, chat_id)
        except InputError as exc:
            await query.answer(exc.message, show_alert=True)
            return
        if press.action == "settings":
            await query.answer(self._describe_job(record)[:200], show_alert=True)
            return
        if not isinstance(message, Message):  # too old to reply to
            await query.answer("That picture is too old to reuse; send the prompt again.", show_alert=True)
            return
        try:
            request = self._again(record, press, _user(update), message)
        except InputError as exc:
            await query.answer(exc.message[:200], show_alert=True)
            return
        await query.answer("Drawing it again…" if press.action == "reroll" else "Drawing a variation…")
        await self._submit(request, message)

    def _again(self, record: JobRecord, press: ButtonPress, user: str, message: Message) -> JobRequest:
        """The same prompt and options with a new seed (one engine only for a variation)."""
        original = record.request
        request = original.model_copy(
            update={
                "seed": None,
                "engines": [press.engine] if press.engine else original.engines,
                "user": user,
                "conversation": _conversation(message),
            }
        )
        return validate_request(request, self.settings)  # engines may have been disabled since

    @staticmethod
    def _describe_job(record: JobRecord) -> str:
        req = record.request
        text = (
            f"seed {record.seed} · steps {record.steps} · size {record.size} · "
            f"engines {','.join(req.engines)} · n {req.count}"
        )
        if req.negative_prompt:
            text += f" · no “{req.negative_prompt}”"
        return text


async def on_error(update: object, context: ContextTypes.DEFAULT_TYPE) -> None:
    """A handler that hit a Redis outage answers "the queue is unavailable"; anything else is logged."""
    if isinstance(context.error, UNAVAILABLE_ERRORS) and isinstance(update, Update):
        if update.callback_query is not None:
            await update.callback_query.answer(QUEUE_UNAVAILABLE_TEXT, show_alert=True)
        elif update.effective_message is not None:
            await TelegramHandlers.reply(update.effective_message, QUEUE_UNAVAILABLE_TEXT)
        return
    log.error("handling an update failed", exc_info=context.error)


def register(application: Application, settings: Settings, queue: QueueClient) -> TelegramHandlers:
    """Add every handler of the bot to ``application``; returns the handler object (tests inspect it)."""
    handlers = TelegramHandlers(application, settings, queue)
    new = filters.UpdateType.MESSAGE  # an edited prompt is not a new request
    application.add_handler(CommandHandler("imagine", handlers.imagine, filters=new))
    application.add_handler(CommandHandler("queue", handlers.show_queue, filters=new))
    application.add_handler(CommandHandler("cancel", handlers.cancel, filters=new))
    application.add_handler(CommandHandler("settings", handlers.user_settings, filters=new))
    application.add_handler(CommandHandler(["help", "start"], handlers.help, filters=new))
    application.add_handler(CommandHandler("retrain", handlers.retrain, filters=new))
    application.add_handler(CommandHandler("model", handlers.model, filters=new))
    application.add_handler(CallbackQueryHandler(handlers.button))
    application.add_handler(
        MessageHandler(
            new & filters.ChatType.PRIVATE & filters.TEXT & ~filters.COMMAND, handlers.private_text
        )
    )
    application.add_error_handler(on_error)
    application.bot_data["handlers"] = handlers
    return handlers
