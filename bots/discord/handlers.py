"""Slash commands and buttons: parse the interaction, call ``core``, answer. Registered by ``bot.py``.

``/imagine`` validates before it answers (a bad option gets an ephemeral error and nothing is queued),
then defers within Discord's 3-second deadline, submits, and edits the deferred answer into the queue
position; :class:`ProgressTracker` keeps editing it while the job waits and runs.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from typing import TYPE_CHECKING, Any

import discord
from discord import app_commands

from bots.discord.components import ACTIONS, CUSTOM_ID, custom_id
from core.buttons import pressed_job
from core.commands import parse_retrain, parse_retrain_cancel
from core.errors import InputError, JobNotFound
from core.heartbeats import job_notice
from core.ids import is_job_id
from core.job_client import UNAVAILABLE_ERRORS, QueueUnavailable
from core.jobs import Conversation, JobRecord, JobRequest, JobStatus
from core.preferences import Preferences
from core.training_client import TrainingClient, cancelled_text, queued_text
from core.validation import validate_request

if TYPE_CHECKING:
    from bots.discord.bot import ImagineBot

log = logging.getLogger(__name__)

#: Stop editing an answer after this long: its interaction token expires at 15 minutes.
PROGRESS_LIMIT_S = 14 * 60
# The core messages name the text flags (--steps); on Discord the same things are options (steps:).
_FLAG_NAMES = {"--seed": "seed", "--steps": "steps", "--n": "count", "--size": "size", "--no": "negative"}
_FLAG = re.compile(r"--(seed|steps|n|size|no)\b")


def discord_message(exc: InputError) -> str:
    """``exc.message`` with text-flag names replaced by the slash command's option names."""
    return _FLAG.sub(lambda m: _FLAG_NAMES[m.group(0)], exc.message)


def user_key(user: discord.abc.User) -> str:
    """The ``platform:user_id`` form core uses for limits, preferences and ownership."""
    return f"discord:{user.id}"


def conversation_of(interaction: discord.Interaction) -> Conversation:
    """Where a result for ``interaction`` goes: its channel (and thread), and its follow-up webhook."""
    channel = interaction.channel
    channel_id = str(interaction.channel_id)
    thread_id = None
    if isinstance(channel, discord.Thread):
        thread_id = channel_id
        channel_id = str(channel.parent_id)
    return Conversation(
        platform="discord",
        chat_id=channel_id,
        thread_id=thread_id,
        interaction_token=interaction.token,
        application_id=str(interaction.application_id),
    )


def position_text(record: JobRecord, position: int | None, notice: str | None = None) -> str:
    """The answer to a queued job: what is being drawn and where it stands (``notice``: no live
    worker can draw it yet)."""
    what = f"“{record.request.prompt}” ({', '.join(record.request.engines)}, seed {record.seed})"
    if record.status == JobStatus.QUEUED:
        return f"Queued {what}, position {position or 1}." + (f" {notice}" if notice else "")
    if record.status == JobStatus.RUNNING:
        progress = record.progress
        if progress is not None:
            return f"Drawing {what}: {progress.engine} step {progress.step}/{progress.total}."
        return f"Drawing {what}…"
    if record.status == JobStatus.DONE:
        return f"Done: {what}."
    if record.status == JobStatus.CANCELLED:
        return f"Cancelled: {what}."
    return f"Failed: {what}: {record.error or 'unknown error'}"


async def reply_error(interaction: discord.Interaction, exc: InputError) -> None:
    """Tell only the person who asked, whether or not the interaction was answered already."""
    text = discord_message(exc)
    if interaction.response.is_done():
        await interaction.edit_original_response(content=text)
    else:
        await interaction.response.send_message(text, ephemeral=True)


async def submit_and_answer(bot: ImagineBot, interaction: discord.Interaction, request: JobRequest) -> None:
    """Defer, queue ``request`` (validated), answer with the position, and follow its progress."""
    await interaction.response.defer(thinking=True)
    try:
        record = await asyncio.to_thread(bot.queue.submit, request)
    except InputError as exc:  # rate limit, queue full
        await reply_error(interaction, exc)
        return
    position = await asyncio.to_thread(bot.queue.position, record.id)
    notice = await asyncio.to_thread(job_notice, bot.queue.redis, record)  # no worker up yet?
    await interaction.edit_original_response(content=position_text(record, position, notice))
    bot.progress.follow(interaction, record.id)


class ProgressTracker:
    """Edits each pending job's answer with its progress, at most once per ``interval_s`` each."""

    def __init__(self, bot: ImagineBot, interval_s: float) -> None:
        self.bot = bot
        self.interval_s = max(0.1, interval_s)
        self.tasks: set[asyncio.Task[None]] = set()

    def follow(self, interaction: discord.Interaction, job_id: str) -> None:
        """Start following ``job_id`` (bounded by the interaction token's lifetime)."""
        task = asyncio.create_task(self._run(interaction, job_id), name=f"progress-{job_id}")
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _run(self, interaction: discord.Interaction, job_id: str) -> None:
        deadline = time.monotonic() + PROGRESS_LIMIT_S
        last = ""
        while time.monotonic() < deadline:
            await asyncio.sleep(self.interval_s)
            try:
                record, position = await asyncio.to_thread(self.bot.queue.status, job_id)
                notice = await asyncio.to_thread(job_notice, self.bot.queue.redis, record)
            except JobNotFound:
                return
            text = position_text(record, position, notice)
            if text != last:
                try:
                    await interaction.edit_original_response(content=text)
                except discord.HTTPException as exc:  # token expired or message deleted: stop
                    ids = {"job_id": job_id}
                    log.info("progress of %s: edit refused (%s)", job_id, exc.status, extra=ids)
                    return
                last = text
            if record.status.finished:
                return

    async def close(self) -> None:
        """Stop following every job."""
        for task in list(self.tasks):
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)


def register(bot: ImagineBot) -> None:
    """Add every slash command to ``bot.tree``."""
    tree = bot.tree
    settings = bot.settings

    @tree.error
    async def on_error(interaction: discord.Interaction, error: app_commands.AppCommandError) -> None:
        """A command that hit a Redis outage answers "the queue is unavailable"; others are logged."""
        if isinstance(getattr(error, "original", error), UNAVAILABLE_ERRORS):
            await reply_error(interaction, QueueUnavailable().as_input_error())
            return
        log.error("command %s failed", interaction.command and interaction.command.name, exc_info=error)

    @tree.command(name="imagine", description="Draw a picture from a text prompt")
    @app_commands.describe(
        prompt="What to draw",
        engine="dfgan, diffusion, or both: dfgan,diffusion",
        seed="Seed for a repeatable picture",
        steps="Denoising steps (diffusion)",
        count="How many pictures per engine",
        negative="What to keep out of the picture",
    )
    async def imagine(
        interaction: discord.Interaction,
        prompt: str,
        engine: str | None = None,
        seed: int | None = None,
        steps: int | None = None,
        count: int | None = None,
        negative: str | None = None,
    ) -> None:
        user = user_key(interaction.user)
        prefs: Preferences = await asyncio.to_thread(bot.prefs.get, user)
        engines = [e.strip().lower() for e in (engine or "").split(",") if e.strip()]
        try:
            # Validation is pure and quick: done before answering, so an error can be ephemeral.
            request = validate_request(
                JobRequest(
                    prompt=prompt,
                    engines=engines or prefs.engines or [],
                    seed=seed,
                    count=count if count is not None else (prefs.count or 1),
                    steps=steps if steps is not None else prefs.steps,
                    size=prefs.size,
                    negative_prompt=negative,
                    user=user,
                    conversation=conversation_of(interaction),
                ),
                settings,
            )
        except InputError as exc:
            await reply_error(interaction, exc)
            return
        await submit_and_answer(bot, interaction, request)

    @tree.command(name="queue", description="Your jobs that are waiting or being drawn")
    async def queue_(interaction: discord.Interaction) -> None:
        jobs = await asyncio.to_thread(bot.queue.user_jobs, user_key(interaction.user))
        if not jobs:
            text = "You have no jobs waiting."
        else:
            text = "\n".join(f"`{r.id}` {position_text(r, p)}" for r, p in jobs)
        await interaction.response.send_message(text[:2000], ephemeral=True)

    @tree.command(name="cancel", description="Cancel one of your jobs (the newest when no id is given)")
    @app_commands.describe(job="Job id, as shown by /queue")
    async def cancel(interaction: discord.Interaction, job: str | None = None) -> None:
        user = user_key(interaction.user)
        try:
            if job is None:
                pending = await asyncio.to_thread(bot.queue.user_jobs, user)
                if not pending:
                    raise InputError("nothing_to_cancel", "You have no jobs waiting.")
                job = pending[-1][0].id
            if not is_job_id(job.strip()):
                raise JobNotFound(job)
            record = await asyncio.to_thread(bot.queue.cancel, job.strip(), user)
        except JobNotFound:
            await interaction.response.send_message("No such job (it may have expired).", ephemeral=True)
            return
        except InputError as exc:
            await reply_error(interaction, exc)
            return
        await interaction.response.send_message(f"Cancelled “{record.request.prompt}”.", ephemeral=True)

    @tree.command(name="settings", description="Your defaults for /imagine (no options: show them)")
    @app_commands.describe(
        engine="dfgan, diffusion, or both",
        steps="Default steps",
        size="Default size",
        count="Default pictures per engine",
        reset="Forget your defaults",
    )
    async def settings_(
        interaction: discord.Interaction,
        engine: str | None = None,
        steps: int | None = None,
        size: int | None = None,
        count: int | None = None,
        reset: bool = False,
    ) -> None:
        user = user_key(interaction.user)
        parts = []
        if engine:
            parts.append(f"--engine {','.join(e.strip() for e in engine.split(',') if e.strip())}")
        for flag, value in (("steps", steps), ("size", size), ("n", count)):
            if value is not None:
                parts.append(f"--{flag} {value}")
        try:
            if reset:
                prefs = await asyncio.to_thread(bot.prefs.set_from_text, user, "reset", settings)
            elif parts:
                prefs = await asyncio.to_thread(bot.prefs.set_from_text, user, " ".join(parts), settings)
            else:
                prefs = await asyncio.to_thread(bot.prefs.get, user)
        except InputError as exc:
            await reply_error(interaction, exc)
            return
        await interaction.response.send_message(preferences_text(prefs, bot), ephemeral=True)

    @tree.command(name="retrain", description="Retrain DF-GAN on a dataset (admins)")
    @app_commands.describe(
        dataset="Dataset name",
        epochs="Training epochs",
        from_scratch="Start from random weights (default: fine-tune the model in use)",
        model="dfgan (default) or diffusion",
    )
    @app_commands.default_permissions(manage_guild=True)
    async def retrain(
        interaction: discord.Interaction,
        dataset: str,
        epochs: int = 10,
        from_scratch: bool = False,
        model: str = "dfgan",
    ) -> None:
        start = "scratch" if from_scratch else "current"
        try:
            # The admin check is ours, on the server side; default_permissions only hides the command.
            plan = parse_retrain(
                f"/retrain dataset:{dataset} epochs:{epochs} from:{start} model:{''.join(model.split())}",
                settings,
                "discord",
                str(interaction.user.id),
            )
        except InputError as exc:
            await reply_error(interaction, exc)
            return
        bot: ImagineBot = interaction.client  # type: ignore[assignment]
        client = TrainingClient(settings, client=bot.queue.redis, producer=bot.queue.producer)
        try:
            run = await asyncio.to_thread(
                client.submit_retrain, plan, user_key(interaction.user), conversation_of(interaction)
            )
        except InputError as exc:
            await reply_error(interaction, exc)
            return
        await interaction.response.send_message(queued_text(run), ephemeral=True)

    @tree.command(name="retrain_cancel", description="Cancel a training run (admins; no id: your latest)")
    @app_commands.describe(run="Run id, as shown when the run was queued")
    @app_commands.default_permissions(manage_guild=True)
    async def retrain_cancel(interaction: discord.Interaction, run: str | None = None) -> None:
        bot: ImagineBot = interaction.client  # type: ignore[assignment]
        client = TrainingClient(settings, client=bot.queue.redis, producer=bot.queue.producer)
        try:
            run_id = parse_retrain_cancel(
                f"/retrain cancel {run or ''}", settings, "discord", str(interaction.user.id)
            )
            cancelled = await asyncio.to_thread(client.cancel_from_chat, run_id, user_key(interaction.user))
        except InputError as exc:
            await reply_error(interaction, exc)
            return
        await interaction.response.send_message(cancelled_text(cancelled), ephemeral=True)

    @tree.command(name="model", description="Which models this deployment runs (admins)")
    @app_commands.default_permissions(manage_guild=True)
    async def model(interaction: discord.Interaction) -> None:
        if not settings.is_admin("discord", str(interaction.user.id)):
            await interaction.response.send_message(
                "Only admins can see and change the model.", ephemeral=True
            )
            return
        lines = [
            f"Engines: {', '.join(settings.enabled_engines)}",
            f"DF-GAN checkpoint: {settings.dfgan_checkpoint or 'shipped default'}",
            f"Diffusion model: {settings.diffusion_model or 'shipped default'}",
        ]
        await interaction.response.send_message("\n".join(lines), ephemeral=True)


def preferences_text(prefs: Preferences, bot: ImagineBot) -> str:
    """A user's defaults, with the server's default where they set none."""
    s = bot.settings
    return (
        "Your defaults: "
        f"engines {', '.join(prefs.engines or s.default_engines)}, "
        f"steps {prefs.steps or s.default_steps}, size {prefs.size or s.default_size}, "
        f"count {prefs.count or 1}."
    )


class ResultButton(discord.ui.DynamicItem[discord.ui.Button], template=CUSTOM_ID):
    """A button under a delivered image. Persistent: it is rebuilt from its ``custom_id`` after a restart."""

    def __init__(self, action: str, job_id: str) -> None:
        super().__init__(discord.ui.Button(label=ACTIONS[action][0], custom_id=custom_id(action, job_id)))
        self.action = action
        self.job_id = job_id

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Item[Any], match: re.Match[str], /
    ) -> ResultButton:
        """Rebuild the button from ``ib:<action>:<job_id>``."""
        return cls(match["action"], match["job_id"])

    async def callback(self, interaction: discord.Interaction) -> None:  # type: ignore[override]
        """Reroll (new seed), a variation (one engine, new seed), or show the job's settings; while
        Redis is down, the same "queue unavailable" answer as the commands (not a silent failure)."""
        try:
            await self._act(interaction)
        except UNAVAILABLE_ERRORS:
            await reply_error(interaction, QueueUnavailable())

    async def _act(self, interaction: discord.Interaction) -> None:
        bot: ImagineBot = interaction.client  # type: ignore[assignment]
        # A custom_id can be forged: act only on a job posted in this channel (or its threads).
        here = conversation_of(interaction).chat_id
        try:
            original = await asyncio.to_thread(pressed_job, bot.queue.jobs, self.job_id, "discord", here)
        except InputError as exc:
            await interaction.response.send_message(exc.message, ephemeral=True)
            return
        if self.action == "info":
            await interaction.response.send_message(job_settings_text(original), ephemeral=True)
            return
        engine = ACTIONS[self.action][1]
        try:
            request = validate_request(
                original.request.model_copy(
                    update={
                        "engines": [engine] if engine else original.request.engines,
                        "seed": None,
                        "user": user_key(interaction.user),
                        "conversation": conversation_of(interaction),
                    }
                ),
                bot.settings,
            )
        except InputError as exc:  # e.g. the engine was disabled since
            await reply_error(interaction, exc)
            return
        await submit_and_answer(bot, interaction, request)


def job_settings_text(record: JobRecord) -> str:
    """Everything needed to draw ``record`` again."""
    req = record.request
    text = (
        f"“{req.prompt}” · engines {', '.join(req.engines)} · seed {record.seed} · steps {record.steps} · "
        f"size {record.size} · count {req.count}"
    )
    if req.negative_prompt:
        text += f" · negative “{req.negative_prompt}”"
    return text[:2000]
