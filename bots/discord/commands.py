"""The slash commands, defined at module level as in discord.py's examples; ``bot.py`` adds
:data:`COMMANDS` to its tree in ``setup_hook``. State (settings, queue, preferences) is reached
through ``interaction.client``.

``/imagine`` validates before it answers (a bad option gets an ephemeral error and nothing is queued),
then defers within Discord's 3-second deadline, submits, and edits the deferred answer into the queue
position, which the progress editor keeps up to date.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

import discord
from discord import app_commands

from bots.discord.handlers import (
    conversation_of,
    reply_error,
    reply_private,
    submit_and_answer,
    user_key,
)
from bots.discord.progress import position_text
from core.commands import parse_retrain, parse_retrain_cancel
from core.errors import InputError, JobNotFound
from core.ids import is_job_id
from core.job_client import UNAVAILABLE_ERRORS, QueueUnavailable
from core.jobs import JobRequest
from core.preferences import Preferences
from core.training_client import TrainingClient, cancelled_text, queued_text
from core.validation import validate_request

if TYPE_CHECKING:
    from bots.discord.bot import ImagineBot

log = logging.getLogger(__name__)


async def on_command_error(interaction: discord.Interaction, error: app_commands.AppCommandError) -> None:
    """A command that hit a Redis outage answers "the queue is unavailable"; others are logged."""
    if isinstance(getattr(error, "original", error), UNAVAILABLE_ERRORS):
        await reply_error(interaction, QueueUnavailable().as_input_error())
        return
    log.error("command %s failed", interaction.command and interaction.command.name, exc_info=error)


@app_commands.command(name="imagine", description="Draw a picture from a text prompt")
@app_commands.describe(
    prompt="What to draw",
    engine="dfgan, diffusion, or both: dfgan,diffusion",
    seed="Seed for a repeatable picture",
    steps="Denoising steps (diffusion)",
    count="How many pictures per engine",
    negative="What to keep out of the picture",
)
async def imagine(
    interaction: discord.Interaction[ImagineBot],
    prompt: str,
    engine: str | None = None,
    seed: int | None = None,
    steps: int | None = None,
    count: int | None = None,
    negative: str | None = None,
) -> None:
    """Queue a picture: the user's defaults fill the options they left out."""
    bot = interaction.client
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
            bot.settings,
        )
    except InputError as exc:
        await reply_error(interaction, exc)
        return
    await submit_and_answer(interaction, request)


@app_commands.command(name="queue", description="Your jobs that are waiting or being drawn")
async def list_queue(interaction: discord.Interaction[ImagineBot]) -> None:
    """List the user's unfinished jobs with their ids."""
    jobs = await asyncio.to_thread(interaction.client.queue.user_jobs, user_key(interaction.user))
    if not jobs:
        text = "You have no jobs waiting."
    else:
        text = "\n".join(f"`{r.id}` {position_text(r, p)}" for r, p in jobs)
    await reply_private(interaction, text[:2000])


@app_commands.command(name="cancel", description="Cancel one of your jobs (the newest when no id is given)")
@app_commands.describe(job="Job id, as shown by /queue")
async def cancel(interaction: discord.Interaction[ImagineBot], job: str | None = None) -> None:
    """Cancel the named job, or the user's newest unfinished one."""
    bot = interaction.client
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
        await reply_private(interaction, "No such job (it may have expired).")
        return
    except InputError as exc:
        await reply_error(interaction, exc)
        return
    await reply_private(interaction, f"Cancelled “{record.request.prompt}”.")


@app_commands.command(name="settings", description="Your defaults for /imagine (no options: show them)")
@app_commands.describe(
    engine="dfgan, diffusion, or both",
    steps="Default steps",
    size="Default size",
    count="Default pictures per engine",
    reset="Forget your defaults",
)
async def user_settings(
    interaction: discord.Interaction[ImagineBot],
    engine: str | None = None,
    steps: int | None = None,
    size: int | None = None,
    count: int | None = None,
    reset: bool = False,
) -> None:
    """Show, change or forget the user's defaults."""
    bot = interaction.client
    user = user_key(interaction.user)
    parts = []
    if engine:
        parts.append(f"--engine {','.join(e.strip() for e in engine.split(',') if e.strip())}")
    for flag, value in (("steps", steps), ("size", size), ("n", count)):
        if value is not None:
            parts.append(f"--{flag} {value}")
    try:
        if reset:
            prefs = await asyncio.to_thread(bot.prefs.set_from_text, user, "reset", bot.settings)
        elif parts:
            prefs = await asyncio.to_thread(bot.prefs.set_from_text, user, " ".join(parts), bot.settings)
        else:
            prefs = await asyncio.to_thread(bot.prefs.get, user)
    except InputError as exc:
        await reply_error(interaction, exc)
        return
    await reply_private(interaction, preferences_text(prefs, bot))


def preferences_text(prefs: Preferences, bot: ImagineBot) -> str:
    """A user's defaults, with the server's default where they set none."""
    s = bot.settings
    return (
        "Your defaults: "
        f"engines {', '.join(prefs.engines or s.default_engines)}, "
        f"steps {prefs.steps or s.default_steps}, size {prefs.size or s.default_size}, "
        f"count {prefs.count or 1}."
    )


@app_commands.command(name="retrain", description="Retrain DF-GAN on a dataset (admins)")
@app_commands.describe(
    dataset="Dataset name",
    epochs="Training epochs",
    from_scratch="Start from random weights (default: fine-tune the model in use)",
    model="dfgan (default) or diffusion",
)
@app_commands.default_permissions(manage_guild=True)
async def retrain(
    interaction: discord.Interaction[ImagineBot],
    dataset: str,
    epochs: int = 10,
    from_scratch: bool = False,
    model: str = "dfgan",
) -> None:
    """Queue a training run (the admin check is ours: ``default_permissions`` only hides it)."""
    bot = interaction.client
    start = "scratch" if from_scratch else "current"
    client = TrainingClient(bot.settings, client=bot.queue.redis, producer=bot.queue.producer)
    try:
        plan = parse_retrain(
            f"/retrain dataset:{dataset} epochs:{epochs} from:{start} model:{''.join(model.split())}",
            bot.settings,
            "discord",
            str(interaction.user.id),
        )
        run = await asyncio.to_thread(
            client.submit_retrain, plan, user_key(interaction.user), conversation_of(interaction)
        )
    except InputError as exc:
        await reply_error(interaction, exc)
        return
    await reply_private(interaction, queued_text(run))


@app_commands.command(name="retrain_cancel", description="Cancel a training run (admins; no id: your latest)")
@app_commands.describe(run="Run id, as shown when the run was queued")
@app_commands.default_permissions(manage_guild=True)
async def retrain_cancel(interaction: discord.Interaction[ImagineBot], run: str | None = None) -> None:
    """Cancel the named training run, or the admin's latest unfinished one."""
    bot = interaction.client
    client = TrainingClient(bot.settings, client=bot.queue.redis, producer=bot.queue.producer)
    try:
        run_id = parse_retrain_cancel(
            f"/retrain cancel {run or ''}", bot.settings, "discord", str(interaction.user.id)
        )
        cancelled = await asyncio.to_thread(client.cancel_from_chat, run_id, user_key(interaction.user))
    except InputError as exc:
        await reply_error(interaction, exc)
        return
    await reply_private(interaction, cancelled_text(cancelled))


@app_commands.command(name="model", description="Which models this deployment runs (admins)")
@app_commands.default_permissions(manage_guild=True)
async def model(interaction: discord.Interaction[ImagineBot]) -> None:
    """Show the engines and the models they load (admins only)."""
    settings = interaction.client.settings
    if not settings.is_admin("discord", str(interaction.user.id)):
        await reply_private(interaction, "Only admins can see and change the model.")
        return
    lines = [
        f"Engines: {', '.join(settings.enabled_engines)}",
        f"DF-GAN checkpoint: {settings.dfgan_checkpoint or 'shipped default'}",
        f"Diffusion model: {settings.diffusion_model or 'shipped default'}",
    ]
    await reply_private(interaction, "\n".join(lines))


#: Every slash command, in the order they are published.
COMMANDS = (imagine, list_queue, cancel, user_settings, retrain, retrain_cancel, model)
