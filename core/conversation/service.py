"""The conversation service: every front-end's actions, answered the same way on every platform.

``handle(caller, action)`` runs one action and returns its reply; it never raises for anything a
person did (those are :class:`~core.conversation.replies.Refused` replies). Only an unreachable
Redis propagates (as redis / kombu errors) to the front-end's outage handler. Methods block: async
front-ends call them with ``asyncio.to_thread``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from core.aspect import parse_aspect
from core.buttons import pressed_job, shown_job
from core.commands import check_run_id
from core.conversation import result_actions
from core.conversation.actions import (
    Action,
    Again,
    Cancel,
    ChannelNsfw,
    FromText,
    Help,
    Imagine,
    JobInfo,
    ModelPromote,
    ModelRollback,
    ModelVersions,
    Pick,
    RemixAsk,
    Retrain,
    RetrainCancel,
    Show,
    ShowModel,
    ShowModels,
    ShowQueue,
    Upscale,
    UserSettings,
    Vary,
)
from core.conversation.caller import Caller
from core.conversation.replies import (
    NO_JOBS_TEXT,
    NO_SUCH_JOB_TEXT,
    Cancelled,
    HelpShown,
    JobList,
    JobSettings,
    ModelPromoted,
    ModelRolledBack,
    ModelShown,
    ModelsShown,
    ModelVersionsShown,
    NsfwRuleShown,
    Picked,
    Prepared,
    Queued,
    Refused,
    RemixPrompt,
    Reply,
    ResultShown,
    RetrainCancelled,
    RetrainQueued,
    SettingsShown,
)
from core.datasets_chat import DatasetActions
from core.errors import InputError, JobNotFound
from core.heartbeats import job_notice
from core.ids import is_job_id
from core.job_client import QueueClient, QueueUnavailable
from core.jobs import Conversation, JobRecord, JobRequest, SourcePicture
from core.model_catalog import catalogue_text, lora_names
from core.model_versions import ModelRegistry, RegistryError, family_of
from core.nsfw import ChannelNsfw as ChannelNsfwStore
from core.nsfw import channel_policy, conversation_policy, parse_policy
from core.preferences import Preferences, PreferenceStore
from core.settings import Settings
from core.training_client import TrainingClient
from core.uploads import UploadStore
from core.validation import build_request, validate_options, validate_request


class ConversationService:
    """The actions of :mod:`core.conversation.actions` against the queue, preferences and training."""

    def __init__(
        self, settings: Settings, queue: QueueClient, training: TrainingClient | None = None
    ) -> None:
        self.settings = settings
        self.queue = queue
        self.prefs = PreferenceStore(queue.redis)
        #: Front-ends store a picture sent with a prompt here: ``key = service.uploads.put(data)``
        #: (raises InputError with a specific code for a bad image) and pass the key as ``image_key``.
        self.uploads = UploadStore(queue.redis, settings.result_ttl_s)
        self.channel_nsfw = ChannelNsfwStore(queue.redis)
        self.training = training or TrainingClient(settings, queue.redis, queue.producer)
        self._handlers: dict[type, Callable[[Caller, Any], Reply]] = {
            Imagine: self._draw,
            Again: self._draw,
            Vary: self._draw,
            Upscale: self._draw,
            Pick: self._pick,
            RemixAsk: self._remix_ask,
            Show: self._show,
            Cancel: self._cancel,
            JobInfo: self._job_info,
            ShowQueue: self._show_queue,
            UserSettings: self._user_settings,
            Retrain: self._retrain,
            RetrainCancel: self._retrain_cancel,
            ShowModel: self._show_model,
            ModelVersions: self._model_versions,
            ModelPromote: self._model_promote,
            ModelRollback: self._model_rollback,
            ShowModels: self._show_models,
            ChannelNsfw: self._channel_nsfw,
            Help: lambda caller, action: HelpShown(),
        }
        # /dataset (community datasets, issue 19): actions, replies and texts in core.datasets_chat.
        self._handlers.update(DatasetActions(settings, queue.redis).handlers())

    def caller(self, user_id: str, conversation: Conversation) -> Caller:
        """The caller ``user_id`` on ``conversation.platform`` (an admin when the settings say so)."""
        return Caller.of(self.settings, user_id, conversation)

    def handle(self, caller: Caller, action: Action | FromText) -> Reply:
        """Run ``action`` for ``caller``; the reply says what happened (or why not)."""
        kind = action.kind if isinstance(action, FromText) else type(action)
        if kind.refusal is not None and not caller.is_admin:
            return Refused("not_admin", kind.refusal)
        try:
            parsed = action.parse(self.settings) if isinstance(action, FromText) else action
            return self._handlers[type(parsed)](caller, parsed)
        except InputError as exc:
            return Refused.of(exc)

    # --- drawing -------------------------------------------------------------------------------
    def prepare(
        self, caller: Caller, action: Imagine | Again | Vary | Upscale | FromText
    ) -> Prepared | Refused:
        """Check a prompt (or a button's "again", variation, remix or upscale) without queueing it.
        Quick and pure but for a few Redis reads (a variation copies its picture into an upload);
        front-ends that answer before queueing call this, then :meth:`submit`."""
        try:
            parsed = action.parse(self.settings) if isinstance(action, FromText) else action
            if isinstance(parsed, Again):
                return self._again(caller, parsed)
            if isinstance(parsed, Vary):
                return self._vary(caller, parsed)
            if isinstance(parsed, Upscale):
                return self._upscale(caller, parsed)
            if not isinstance(parsed, Imagine):
                raise TypeError(
                    f"prepare() takes Imagine, Again, Vary or Upscale, not {type(parsed).__name__}"
                )
            prefs = self.prefs.get(caller.user)
            request = build_request(parsed, caller.user, caller.conversation, prefs)
            return Prepared(self._checked(caller, request, parsed.channel_is_nsfw))
        except InputError as exc:
            return Refused.of(exc)

    def submit(self, prepared: Prepared, status_message_id: str | None = None) -> Queued | Refused:
        """Queue a prepared request (``status_message_id``: the bot's "Queued…" message, which the
        sender removes when the result is posted)."""
        request = prepared.request
        if status_message_id is not None:
            conversation = request.conversation.model_copy(update={"status_message_id": status_message_id})
            request = request.model_copy(update={"conversation": conversation})
        try:
            record = self.queue.submit(request)
        except InputError as exc:  # rate limit, queue full
            return Refused.of(exc)
        except QueueUnavailable as exc:
            return Refused.of(exc.as_input_error())
        position = self.queue.position(record.id)
        return Queued(record, position, job_notice(self.queue.redis, record))

    def _draw(self, caller: Caller, action: Imagine | Again | Vary | Upscale) -> Reply:
        prepared = self.prepare(caller, action)
        return self.submit(prepared) if isinstance(prepared, Prepared) else prepared

    def _again(self, caller: Caller, action: Again) -> Prepared:
        """The pressed job's prompt and options with a new seed (one engine for a variation)."""
        original = self._pressed(caller, action.job_id).request
        request = original.model_copy(
            update={
                "seed": None,
                "engines": [action.engine] if action.engine else original.engines,
                "user": caller.user,
                "conversation": caller.conversation,
            }
        )
        # Validated again: an engine may have been disabled since, an admin may have changed the rule.
        return Prepared(self._checked(caller, request, action.channel_is_nsfw), action.kind)

    def _vary(self, caller: Caller, action: Vary) -> Prepared:
        """A variation (or remix) of one picture of the pressed job, with a new seed: image-to-image
        engines start from a copy of the stored picture, DF-GAN from noise near its seed."""
        original = self._pressed(caller, action.job_id)
        result_actions.check_index(original, action.index)
        source = result_actions.source_picture(original, action.index, None, action.kind)
        from_picture = source.engine in result_actions.FROM_PICTURE
        key = self._copied(original, source) if from_picture else None
        request = result_actions.variation_request(original, action, source, key)
        request = request.model_copy(update={"user": caller.user, "conversation": caller.conversation})
        return Prepared(self._checked(caller, request, action.channel_is_nsfw), action.kind, action.index)

    def _upscale(self, caller: Caller, action: Upscale) -> Prepared:
        """One picture of the pressed job on the upscale engine (not a choosable engine: the job is
        checked with the original's engines, then sent to the upscaler)."""
        original = self._pressed(caller, action.job_id)
        result_actions.check_index(original, action.index)
        source = result_actions.source_picture(original, action.index, action.engine, "upscale")
        request = original.request.model_copy(
            update={"user": caller.user, "conversation": caller.conversation, "image_key": None}
        )
        checked = self._checked(caller, request, action.channel_is_nsfw)
        upscale = result_actions.upscale_request(checked, source, self._copied(original, source))
        return Prepared(upscale, "upscale", action.index)

    def _copied(self, original: JobRecord, source: SourcePicture) -> str:
        return result_actions.copied_upload(self.queue.images, self.uploads, original, source)

    def _checked(self, caller: Caller, request: JobRequest, channel_is_nsfw: bool | None) -> JobRequest:
        """``request`` validated, its upload still there, with the channel's NSFW rule (on Discord a
        channel not said to be marked NSFW withholds)."""
        checked = validate_request(request, self.settings)
        if checked.image_key is not None and self.uploads.get(checked.image_key) is None:
            raise InputError("image_expired", "The image this job starts from has expired; send it again.")
        redis, conversation = self.queue.redis, caller.conversation
        policy = conversation_policy(self.settings, redis, conversation, bool(channel_is_nsfw))
        return checked.model_copy(update={"nsfw": policy.value})

    def _pressed(self, caller: Caller, job_id: str) -> JobRecord:
        """The job a button names, if it was posted in the caller's chat."""
        return pressed_job(self.queue.jobs, job_id, caller.platform, caller.conversation.chat_id)

    # --- the caller's jobs and defaults ----------------------------------------------------------
    def _cancel(self, caller: Caller, action: Cancel) -> Reply:
        job_id = action.job_id
        if job_id is None:
            jobs = self.queue.user_jobs(caller.user)
            if not jobs:
                return Refused("nothing_to_cancel", NO_JOBS_TEXT)
            job_id = jobs[-1][0].id
        job_id = job_id.strip().lower()
        if not is_job_id(job_id):
            return Refused("not_found", NO_SUCH_JOB_TEXT)
        try:
            return Cancelled(self.queue.cancel(job_id, caller.user))
        except JobNotFound:
            return Refused("not_found", NO_SUCH_JOB_TEXT)

    def _job_info(self, caller: Caller, action: JobInfo) -> Reply:
        return JobSettings(self._pressed(caller, action.job_id))

    # --- the pictures of a result ------------------------------------------------------------------
    def _pick(self, caller: Caller, action: Pick) -> Reply:
        """U-n: picture ``index`` of every engine as stored (nothing is drawn)."""
        record = self._pressed(caller, action.job_id)
        result_actions.check_index(record, action.index)
        pictures = result_actions.picked_pictures(self.queue.images, record, action.index)
        return Picked(record, action.index, pictures)

    def _remix_ask(self, caller: Caller, action: RemixAsk) -> Reply:
        record = self._pressed(caller, action.job_id)
        result_actions.check_index(record, action.index)
        return RemixPrompt(result_actions.finished_record(record), action.index)

    def _show(self, caller: Caller, action: Show) -> Reply:
        """``/show``: a finished job of this chat, or the caller's own, with its buttons."""
        job_id = action.job_id.strip().lower()
        if not is_job_id(job_id):
            return Refused("not_found", NO_SUCH_JOB_TEXT)
        conversation = caller.conversation
        record = shown_job(self.queue.jobs, job_id, caller.platform, conversation.chat_id, caller.user)
        return ResultShown(result_actions.finished_record(record))

    def _show_queue(self, caller: Caller, action: ShowQueue) -> Reply:
        return JobList(self.queue.user_jobs(caller.user))

    def _user_settings(self, caller: Caller, action: UserSettings) -> Reply:
        prefs = self._apply_settings(caller.user, action)
        s = self.settings
        return SettingsShown(
            engines=prefs.engines or s.default_engines,
            steps=prefs.steps or s.default_steps,
            size=prefs.size or s.default_size,
            count=prefs.count or 1,
            aspect=prefs.aspect if prefs.aspect != "1:1" else None,
        )

    def _apply_settings(self, user: str, action: UserSettings) -> Preferences:
        """Reset, or validate (the rules of a job) and save, the defaults ``action`` gives; returns
        ``user``'s defaults after it. Raises :class:`InputError`; a refused change stores nothing."""
        if action.reset:
            self.prefs.reset(user)
            return Preferences()
        current = self.prefs.get(user)
        if not action.changes:
            return current
        change = action.preferences
        count = change.count or 1
        validate_options(
            self.settings,
            engines=change.engines,
            steps=change.steps,
            size=change.size,
            count=count,
            aspect=change.aspect,
        )
        if change.aspect is not None:  # lowest terms; 1:1 kept, so that it can undo a default
            change.aspect = str(parse_aspect(change.aspect))
        prefs = current.merged(change)
        self.prefs.save(user, prefs)
        return prefs

    # --- admins ----------------------------------------------------------------------------------
    def _retrain(self, caller: Caller, action: Retrain) -> Reply:
        run = self.training.submit_retrain(
            action, caller.user, caller.conversation, action.max_steps, force=action.force,
            config=action.config, count=action.count, eval_count=action.eval_count,
        )  # fmt: skip
        return RetrainQueued(run)

    def _retrain_cancel(self, caller: Caller, action: RetrainCancel) -> Reply:
        run = self.training.cancel_from_chat(check_run_id(action.run_id), caller.user)
        return RetrainCancelled(run)

    def _show_model(self, caller: Caller, action: ShowModel) -> Reply:
        s = self.settings
        return ModelShown(s.enabled_engines, s.dfgan_checkpoint, s.diffusion_model)

    def _model_versions(self, caller: Caller, action: ModelVersions) -> Reply:
        registry = ModelRegistry(self.settings, self.queue.redis, family=action.family)
        versions = [(e.version, e.dataset, e.metrics.get("all")) for e in registry.list()]
        return ModelVersionsShown(action.family, versions, registry.promoted())

    def _model_promote(self, caller: Caller, action: ModelPromote) -> Reply:
        """The same promotion as ``imaginebot models promote``: workers pick it up at their next batch."""
        try:
            family = family_of(action.version)
            ModelRegistry(self.settings, self.queue.redis, family=family).promote(action.version)
        except RegistryError as exc:
            return Refused("model_version", str(exc).replace("`imaginebot models list`", "/model list"))
        return ModelPromoted(family, action.version)

    def _model_rollback(self, caller: Caller, action: ModelRollback) -> Reply:
        try:
            back_to = ModelRegistry(self.settings, self.queue.redis, family=action.family).rollback()
        except RegistryError as exc:
            return Refused("nothing_to_roll_back", str(exc))
        return ModelRolledBack(action.family, back_to)

    def _channel_nsfw(self, caller: Caller, action: ChannelNsfw) -> Reply:
        """Show, set or clear the caller's channel's rule for flagged pictures."""
        platform, chat_id = caller.platform, caller.conversation.chat_id
        if action.clear:
            self.channel_nsfw.set(platform, chat_id, None)
        elif action.rule is not None:
            self.channel_nsfw.set(platform, chat_id, parse_policy(action.rule).value)
        channel_rule = self.channel_nsfw.get(platform, chat_id)
        rule = channel_policy(self.settings, platform, channel_rule, bool(action.channel_is_nsfw))
        changed = action.clear or action.rule is not None
        return NsfwRuleShown(rule.value, channel_rule, changed)

    # --- everyone ----------------------------------------------------------------------------------
    def _show_models(self, caller: Caller, action: ShowModels) -> Reply:
        return ModelsShown(catalogue_text(self.settings), lora_names(self.settings))
