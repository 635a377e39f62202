"""What a person can ask of the bot, as typed values: one class per action.

A front-end turns a platform event into one of these (structured options straight from a slash
command or a button, or :class:`FromText` for a platform that gives text) and passes it to
:meth:`core.conversation.service.ConversationService.handle`. Text parsing lives with each action
(``from_text``), so every platform reads the same words the same way.

Admin-only actions name the answer a non-admin gets (``refusal``); the service checks it before
the action's text is even parsed.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any, ClassVar

from core.commands import (
    NOT_ADMIN_MODEL,
    NOT_ADMIN_RETRAIN,
    NOT_ADMIN_RETRAIN_CANCEL,
    RetrainRequest,
    check_model,
    read_retrain,
    read_retrain_cancel,
)
from core.errors import InputError
from core.ids import is_job_id
from core.nsfw import parse_policy
from core.preferences import Preferences
from core.prompt import ParsedPrompt, parse_prompt
from core.settings import Settings

__all__ = [
    "Action",
    "Again",
    "Cancel",
    "ChannelNsfw",
    "FromText",
    "Help",
    "Imagine",
    "JobInfo",
    "ModelPromote",
    "ModelRollback",
    "ModelVersions",
    "Pick",
    "RemixAsk",
    "Retrain",
    "RetrainCancel",
    "ShowModel",
    "ShowModels",
    "Show",
    "ShowQueue",
    "Upscale",
    "UserSettings",
    "Vary",
]

MODEL_USAGE = (
    "Use /model (what runs), /model list [model:diffusion], /model promote VERSION "
    "or /model rollback [model:diffusion]."
)
SETTINGS_USAGE = "Give only options, e.g. /settings --engine dfgan --steps 30 (or: reset)."
SHOW_USAGE = "Give a job id, e.g. /show 0123456789abcdef (the id is in the result's caption and /queue)."
NOT_ADMIN_NSFW = "Only admins can set a channel's NSFW rule."
#: What ``/nsfw`` takes besides a rule: go back to the server's rule.
NSFW_CLEAR_WORDS = ("default", "reset", "clear")


@dataclass
class Imagine(ParsedPrompt):
    """Draw ``prompt``; each option left None (engines: empty) takes the user's default, then the
    server's. Fields: ``prompt, seed, engines, steps, count, size, negative_prompt, strength, model,
    loras`` (the prompt flags), and from the front-end: ``image_key`` (an upload to start from, from
    ``service.uploads.put(data)``) and ``channel_is_nsfw`` (Discord: ``channel.nsfw``; elsewhere leave
    None). The service fills the job's NSFW rule from the channel."""

    image_key: str | None = None
    channel_is_nsfw: bool | None = None
    refusal: ClassVar[str | None] = None

    @classmethod
    def from_text(cls, text: str, settings: Settings | None = None) -> Imagine:
        """``[/imagine] <prompt words> [--flags]`` (see :mod:`core.prompt`)."""
        return cls(**asdict(parse_prompt(text)))


@dataclass(frozen=True)
class Cancel:
    """Cancel one of the caller's jobs: ``job_id``, or their newest unfinished one when None."""

    job_id: str | None = None
    refusal: ClassVar[str | None] = None

    @classmethod
    def from_text(cls, text: str, settings: Settings | None = None) -> Cancel:
        """``[job id]`` (anything else than an id is answered "no such job")."""
        words = text.split()
        return cls(words[0] if words else None)


@dataclass(frozen=True)
class Again:
    """Draw a job again with a new seed, as the caller: all its engines (reroll), or only
    ``engine`` (a variation). Pressed under a result, so the job must be from the caller's chat."""

    job_id: str
    engine: str | None = None
    channel_is_nsfw: bool | None = None
    refusal: ClassVar[str | None] = None

    @property
    def kind(self) -> str:
        """``reroll`` or ``variation``."""
        return "variation" if self.engine else "reroll"


@dataclass(frozen=True)
class JobInfo:
    """Show everything needed to draw a job again (the Settings / Info button under a result)."""

    job_id: str
    refusal: ClassVar[str | None] = None


@dataclass(frozen=True)
class Pick:
    """U-n under a result: post picture ``index`` (0-based) of every engine of the job full size,
    as it is stored (no drawing). Pressed under a result, so the job must be from the caller's chat."""

    job_id: str
    index: int
    refusal: ClassVar[str | None] = None


@dataclass(frozen=True)
class Vary:
    """V-n under a result: draw a variation of picture ``index`` (0-based) with a new seed
    (diffusion: image-to-image from the stored picture; DF-GAN: the same caption with noise near
    that picture's). With ``prompt`` it is a remix: the variation with the edited prompt (which may
    carry ``--no`` and ``--strength``)."""

    job_id: str
    index: int
    prompt: str | None = None
    channel_is_nsfw: bool | None = None
    refusal: ClassVar[str | None] = None

    @property
    def kind(self) -> str:
        """``variation`` or ``remix``."""
        return "variation" if self.prompt is None else "remix"


@dataclass(frozen=True)
class RemixAsk:
    """✏️ Remix under a result: the front-end must ask the person for the edited prompt of picture
    ``index`` and send it back as ``Vary(job_id, index, prompt=new)``. Handled by the service (the
    job must be from the caller's chat), which answers :class:`~core.conversation.replies.RemixPrompt`
    with the job's prompt to prefill; ``prompt`` is that prompt once known (None from a button)."""

    job_id: str
    index: int
    prompt: str | None = None
    refusal: ClassVar[str | None] = None


@dataclass(frozen=True)
class Upscale:
    """Upscale ×2 under a picked picture: a job on the ``upscale`` engine from picture ``index``
    (0-based) of ``engine``."""

    job_id: str
    index: int
    engine: str
    channel_is_nsfw: bool | None = None
    refusal: ClassVar[str | None] = None


@dataclass(frozen=True)
class Show:
    """``/show <job id>``: a job's result again, with its buttons (a job of the caller's chat, or
    the caller's own job)."""

    job_id: str
    refusal: ClassVar[str | None] = None

    @classmethod
    def from_text(cls, text: str, settings: Settings | None = None) -> Show:
        """``[/show] <job id>``."""
        words = text.split()
        if words and words[0].lower().startswith("/show"):
            words = words[1:]
        if len(words) != 1 or not is_job_id(words[0].strip().lower()):
            raise InputError("bad_job_id", SHOW_USAGE)
        return cls(words[0].strip().lower())


@dataclass(frozen=True)
class ShowQueue:
    """The caller's jobs that are waiting or being drawn."""

    refusal: ClassVar[str | None] = None


@dataclass(frozen=True)
class UserSettings:
    """The caller's defaults: show them (nothing given), change the ones given, or ``reset`` them."""

    engines: list[str] | None = None
    steps: int | None = None
    size: int | None = None
    count: int | None = None
    reset: bool = False
    #: ``--ar W:H`` as given (checked when saved).
    aspect: str | None = None
    refusal: ClassVar[str | None] = None

    @property
    def changes(self) -> bool:
        """Whether this sets any default."""
        given = (self.steps, self.size, self.count, self.aspect)
        return bool(self.engines) or any(v is not None for v in given)

    @property
    def preferences(self) -> Preferences:
        """The defaults this sets (None where it sets none)."""
        return Preferences(
            engines=self.engines or None,
            steps=self.steps,
            size=self.size,
            count=self.count,
            aspect=self.aspect,
        )

    @classmethod
    def from_text(cls, text: str, settings: Settings | None = None) -> UserSettings:
        """``reset``, nothing (show), or the prompt flags ``--engine a,b --steps N --size N --n N
        --ar W:H``."""
        if text.strip().lower() == "reset":
            return cls(reset=True)
        parsed = parse_prompt(text)
        if parsed.prompt:
            raise InputError("bad_settings", SETTINGS_USAGE)
        if parsed.seed is not None or parsed.negative_prompt is not None:
            raise InputError("bad_settings", "Seed and --no are per prompt; they cannot be defaults.")
        if parsed.strength is not None or parsed.model is not None or parsed.loras:
            raise InputError(
                "bad_settings", "--strength, --model and --lora are per prompt; they cannot be defaults."
            )
        return cls(parsed.engines or None, parsed.steps, parsed.size, parsed.count, aspect=parsed.aspect)


@dataclass
class Retrain(RetrainRequest):
    """Admins: retrain ``model`` on ``dataset`` for ``epochs`` (fine-tune, or ``from_scratch``).

    The operator's knobs, which the command line gives and the chats leave as they are: stop after
    ``max_steps``, ``force`` promotion past the gate, ``config`` overrides, ``count`` images of a
    procedural dataset, ``eval_count`` captions for the gate."""

    max_steps: int | None = None
    force: bool = False
    config: dict[str, Any] | None = None
    count: int | None = None
    eval_count: int | None = None
    refusal: ClassVar[str | None] = NOT_ADMIN_RETRAIN

    @classmethod
    def from_text(cls, text: str, settings: Settings) -> Retrain:
        """``[/retrain] dataset:<name> epochs:<n> [from:scratch|current] [model:dfgan|diffusion]``."""
        return cls(**asdict(read_retrain(text, settings)))


@dataclass(frozen=True)
class RetrainCancel:
    """Admins: cancel training run ``run_id``, or the caller's newest unfinished one when None."""

    run_id: str | None = None
    refusal: ClassVar[str | None] = NOT_ADMIN_RETRAIN_CANCEL

    @classmethod
    def from_text(cls, text: str, settings: Settings | None = None) -> RetrainCancel:
        """``[/retrain] cancel [run id]``."""
        return cls(read_retrain_cancel(text))


@dataclass(frozen=True)
class ShowModel:
    """Admins: which engines and models this deployment runs. Its text (``/model …``) may also ask
    for the trained versions (:class:`ModelVersions`), to promote one (:class:`ModelPromote`) or to
    roll back (:class:`ModelRollback`)."""

    refusal: ClassVar[str | None] = NOT_ADMIN_MODEL

    @classmethod
    def from_text(
        cls, text: str, settings: Settings | None = None
    ) -> ShowModel | ModelVersions | ModelPromote | ModelRollback:
        """``[/model] [list [model:dfgan|diffusion] | promote VERSION | rollback [model:…]]``."""
        words = text.split()
        if words and words[0].lower() == "/model":
            words = words[1:]
        if not words:
            return cls()
        verb, rest = words[0].lower(), words[1:]
        if verb == "promote" and len(rest) == 1:
            return ModelPromote(rest[0])
        if verb in ("list", "rollback") and len(rest) <= 1:
            family = _family(rest[0]) if rest else "dfgan"
            return ModelVersions(family) if verb == "list" else ModelRollback(family)
        raise InputError("bad_model_command", MODEL_USAGE)


@dataclass(frozen=True)
class ModelVersions:
    """Admins: the registered versions of model ``family`` (``dfgan`` | ``diffusion``), newest last,
    with their scores and the one in use."""

    family: str = "dfgan"
    refusal: ClassVar[str | None] = NOT_ADMIN_MODEL


@dataclass(frozen=True)
class ModelPromote:
    """Admins: make ``version`` (as ``/model list`` names it) the one every worker draws with."""

    version: str
    refusal: ClassVar[str | None] = NOT_ADMIN_MODEL


@dataclass(frozen=True)
class ModelRollback:
    """Admins: go back to the ``family`` version promoted before the current one (or the default)."""

    family: str = "dfgan"
    refusal: ClassVar[str | None] = NOT_ADMIN_MODEL


def _family(word: str) -> str:
    """The model family ``model:NAME`` (or a bare ``NAME``) names."""
    name = word.split(":", 1)[1] if word.lower().startswith("model:") else word
    return check_model(name)


@dataclass(frozen=True)
class ShowModels:
    """The diffusion models (``--model``) and LoRAs (``--lora``) the operator offers."""

    refusal: ClassVar[str | None] = None


@dataclass(frozen=True)
class ChannelNsfw:
    """Admins: the current channel's rule for pictures the safety checker flags: show it (``rule``
    None), set it (``withhold`` | ``spoiler`` | ``allow``, any case; checked by the service), or
    ``clear`` it (back to the server's rule).
    ``channel_is_nsfw``: Discord's flag for the channel (elsewhere None)."""

    rule: str | None = None
    clear: bool = False
    channel_is_nsfw: bool | None = None
    refusal: ClassVar[str | None] = NOT_ADMIN_NSFW

    @classmethod
    def from_text(cls, text: str, settings: Settings | None = None) -> ChannelNsfw:
        """``[/nsfw] [withhold|spoiler|allow|default]`` (nothing: show the rule)."""
        words = text.split()
        if words and words[0].lower().startswith("/nsfw"):
            words = words[1:]
        if not words:
            return cls()
        if len(words) > 1:
            raise InputError("bad_nsfw_policy", "Use /nsfw withhold, spoiler, allow or default.")
        if words[0].lower() in NSFW_CLEAR_WORDS:
            return cls(clear=True)
        return cls(parse_policy(words[0]).value)


@dataclass(frozen=True)
class Help:
    """How to use the bot."""

    refusal: ClassVar[str | None] = None


@dataclass(frozen=True)
class FromText:
    """``kind`` (an action class) as the caller typed it: the service checks ``kind.refusal``
    (admins only) first, then parses ``text``; a parse error is answered like any refusal.
    ``image_key``: a picture sent with the text (an :class:`Imagine` starts from it)."""

    kind: type[Imagine | Cancel | UserSettings | Retrain | RetrainCancel | ChannelNsfw | ShowModel | Show]
    text: str = field(default="")
    image_key: str | None = None

    def parse(self, settings: Settings) -> Action:
        """The action ``text`` says. Raises :class:`InputError`."""
        action = self.kind.from_text(self.text, settings)
        if self.image_key is not None and isinstance(action, Imagine):
            action = replace(action, image_key=self.image_key)
        return action


Action = (
    Imagine
    | Cancel
    | Again
    | Pick
    | Vary
    | RemixAsk
    | Upscale
    | Show
    | JobInfo
    | ShowQueue
    | UserSettings
    | Retrain
    | RetrainCancel
    | ShowModel
    | ModelVersions
    | ModelPromote
    | ModelRollback
    | ShowModels
    | ChannelNsfw
    | Help
)
