"""The slash commands, defined at module level as in discord.py's examples; ``bot.py`` adds
:data:`COMMANDS` to its tree in ``setup_hook``. Each turns its options into one action of the
conversation service (reached through ``interaction.client``) and renders the reply.

``/imagine`` is checked before it is answered (a bad option gets an ephemeral error and nothing is
queued), then deferred within Discord's 3-second deadline and queued; the deferred answer shows the
queue position, which the progress editor keeps up to date. With an ``image`` attached, only what can
be checked at once is (its announced size, the LoRA names' shape): the answer is deferred before the
picture is downloaded and checked, and a bad picture's message replaces the deferred answer.
``/show job_id:`` posts a job's picture again with its buttons (``pictures.py``). Every other answer
is ephemeral.
"""

from __future__ import annotations

import asyncio
import logging
import re
from typing import TYPE_CHECKING

import discord
from discord import app_commands

from bots.discord.attachments import check_attachment
from bots.discord.datasets import dataset
from bots.discord.handlers import (
    ask,
    caller_of,
    channel_is_nsfw,
    discord_text,
    draw,
    reply_private,
    reply_unavailable,
)
from bots.discord.pictures import post_shown
from core.conversation import (
    Cancel,
    ChannelNsfw,
    FromText,
    Imagine,
    Refused,
    ResultShown,
    Retrain,
    RetrainCancel,
    Show,
    ShowModel,
    ShowModels,
    ShowQueue,
    UserSettings,
)
from core.conversation.actions import NSFW_CLEAR_WORDS
from core.errors import InputError
from core.job_client import UNAVAILABLE_ERRORS
from core.jobs import LoraChoice
from core.model_catalog import parse_lora
from core.prompt import split_engines

if TYPE_CHECKING:
    from bots.discord.bot import ImagineBot

log = logging.getLogger(__name__)


async def on_command_error(interaction: discord.Interaction, error: app_commands.AppCommandError) -> None:
    """A command that hit a Redis outage answers "the queue is unavailable"; others are logged."""
    if isinstance(getattr(error, "original", error), UNAVAILABLE_ERRORS):
        await reply_unavailable(interaction)
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
    image="A picture to start from (PNG, JPEG or WebP, up to 10 MB; diffusion)",
    strength="How much of the picture to redraw, 0.0-1.0 (with an image)",
    model="A model (see /models): a diffusion one, or a DF-GAN one such as emoji",
    lora="LoRAs: NAME or NAME:WEIGHT, several separated by commas (see /models)",
    ar="Aspect ratio width:height, e.g. 16:9, 2:3 (1:4 to 4:1)",
)
async def imagine(
    interaction: discord.Interaction[ImagineBot],
    prompt: str,
    engine: str | None = None,
    seed: int | None = None,
    steps: int | None = None,
    count: int | None = None,
    negative: str | None = None,
    image: discord.Attachment | None = None,
    strength: float | None = None,
    model: str | None = None,
    lora: str | None = None,
    ar: str | None = None,
) -> None:
    """Queue a picture: the user's defaults fill the options they left out."""
    try:
        loras = split_loras(lora or "")
        if image is not None:
            check_attachment(image)
    except InputError as exc:
        await reply_private(interaction, discord_text(Refused.of(exc)))
        return
    asked = Imagine(
        prompt=prompt,
        engines=split_engines(engine or ""),
        seed=seed,
        steps=steps,
        count=count,
        negative_prompt=negative,
        strength=strength,
        model=model,
        loras=loras,
        aspect=ar,
        channel_is_nsfw=channel_is_nsfw(interaction),
    )
    await draw(interaction, asked, image)


def split_loras(value: str) -> list[LoraChoice]:
    """The LoRAs of the ``lora`` option: ``NAME[:WEIGHT]`` each, separated by commas or spaces."""
    return [parse_lora(part) for part in re.split(r"[,\s]+", value) if part]


@app_commands.command(name="queue", description="Your jobs that are waiting or being drawn")
async def list_queue(interaction: discord.Interaction[ImagineBot]) -> None:
    """List the user's unfinished jobs with their ids."""
    await ask(interaction, ShowQueue())


@app_commands.command(name="cancel", description="Cancel one of your jobs (the newest when no id is given)")
@app_commands.describe(job="Job id, as shown by /queue")
async def cancel(interaction: discord.Interaction[ImagineBot], job: str | None = None) -> None:
    """Cancel the named job, or the user's newest unfinished one."""
    await ask(interaction, Cancel(job))


@app_commands.command(name="settings", description="Your defaults for /imagine (no options: show them)")
@app_commands.describe(
    engine="dfgan, diffusion, or both",
    steps="Default steps",
    size="Default size",
    count="Default pictures per engine",
    reset="Forget your defaults",
    ar="Default aspect ratio width:height, e.g. 16:9 (1:1 for square)",
)
async def user_settings(
    interaction: discord.Interaction[ImagineBot],
    engine: str | None = None,
    steps: int | None = None,
    size: int | None = None,
    count: int | None = None,
    reset: bool = False,
    ar: str | None = None,
) -> None:
    """Show, change or forget the user's defaults."""
    change = UserSettings(split_engines(engine or "") or None, steps, size, count, reset, aspect=ar)
    await ask(interaction, change)


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
    """Queue a training run (the admin check is core's: ``default_permissions`` only hides it)."""
    await ask(interaction, Retrain(dataset, epochs, from_scratch, model))


@app_commands.command(name="retrain_cancel", description="Cancel a training run (admins; no id: your latest)")
@app_commands.describe(run="Run id, as shown when the run was queued")
@app_commands.default_permissions(manage_guild=True)
async def retrain_cancel(interaction: discord.Interaction[ImagineBot], run: str | None = None) -> None:
    """Cancel the named training run, or the admin's latest unfinished one."""
    await ask(interaction, RetrainCancel(run))


#: ``/model``'s actions: show what runs, list the trained versions, promote one, roll back.
MODEL_ACTIONS = [app_commands.Choice(name=a, value=a) for a in ("show", "list", "promote", "rollback")]


@app_commands.command(
    name="model", description="The models in use; list, promote or roll back versions (admins)"
)
@app_commands.describe(
    action="show (default), list, promote or rollback",
    version="The version to promote, as /model list names it",
    model="dfgan (default) or diffusion, for list and rollback",
)
@app_commands.choices(action=MODEL_ACTIONS)
@app_commands.default_permissions(manage_guild=True)
async def model(
    interaction: discord.Interaction[ImagineBot],
    action: str = "show",
    version: str | None = None,
    model: str = "dfgan",
) -> None:
    """Show the engines and models, list a family's versions, promote one or roll back (admins only;
    the words are read as the text platforms' ``/model …``)."""
    words = {"show": "", "promote": f"promote {version or ''}"}.get(action, f"{action} model:{model}")
    await ask(interaction, FromText(ShowModel, words))


@app_commands.command(name="models", description="The models and LoRAs you can choose in /imagine")
async def models(interaction: discord.Interaction[ImagineBot]) -> None:
    """List the diffusion models (with what each is good at) and the LoRAs on offer."""
    await ask(interaction, ShowModels())


#: ``/nsfw``'s choices; "default" goes back to the server's rule.
NSFW_CHOICES = [
    app_commands.Choice(name=rule, value=rule) for rule in ("withhold", "spoiler", "allow", "default")
]


@app_commands.command(name="nsfw", description="This channel's rule for flagged pictures (admins)")
@app_commands.describe(rule="withhold, spoiler, allow, or default (the server's rule); none: show it")
@app_commands.choices(rule=NSFW_CHOICES)
@app_commands.default_permissions(manage_guild=True)
async def nsfw(interaction: discord.Interaction[ImagineBot], rule: str | None = None) -> None:
    """Show or set what this channel does with pictures the safety checker flags (admins only;
    spoiler and allow apply only where Discord marks the channel NSFW)."""
    marked = channel_is_nsfw(interaction)
    if rule is not None and rule.strip().lower() in NSFW_CLEAR_WORDS:
        action = ChannelNsfw(clear=True, channel_is_nsfw=marked)
    else:
        action = ChannelNsfw(rule, channel_is_nsfw=marked)
    await ask(interaction, action)


@app_commands.command(name="show", description="A job's picture again, with its buttons")
@app_commands.describe(job_id="Job id, as in the result's caption or /queue")
async def show(interaction: discord.Interaction[ImagineBot], job_id: str) -> None:
    """Post a job of this channel (or one's own job) again with its result buttons."""
    service = interaction.client.service
    reply = await asyncio.to_thread(service.handle, caller_of(interaction), FromText(Show, job_id))
    if isinstance(reply, ResultShown):
        await post_shown(interaction, reply)
    else:
        await reply_private(interaction, discord_text(reply))


#: Every slash command, in the order they are published.
COMMANDS = (
    imagine,
    list_queue,
    cancel,
    user_settings,
    retrain,
    retrain_cancel,
    model,
    models,
    nsfw,
    dataset,
    show,
)
