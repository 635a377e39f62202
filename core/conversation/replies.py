"""What the bot answers, as typed values whose user-facing words are written here, once.

Every reply has ``.text`` (plain text, the same on every platform) and ``.ok`` (False only for
:class:`Refused`). Front-ends render a reply as their platform needs (a Telegram reply, an ephemeral
Discord message, the web API's JSON), using its fields when they show more than the text.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar

from core.commands import MODEL_TITLES
from core.compose import ENGINE_TITLES
from core.conversation.status import queue_line, status_line
from core.errors import InputError
from core.jobs import JobRecord, JobRequest
from core.prompt import FLAG_HELP

if TYPE_CHECKING:
    from core.train_runs import TrainRun

__all__ = [
    "Cancelled",
    "HelpShown",
    "JobList",
    "JobSettings",
    "ModelPromoted",
    "ModelRolledBack",
    "ModelShown",
    "ModelVersionsShown",
    "ModelsShown",
    "NsfwRuleShown",
    "Picked",
    "PictureOut",
    "Prepared",
    "Queued",
    "Refused",
    "RemixPrompt",
    "Reply",
    "ResultShown",
    "RetrainCancelled",
    "RetrainQueued",
    "SettingsShown",
]

NO_JOBS_TEXT = "You have no pictures waiting or in progress."
NO_SUCH_JOB_TEXT = "No such job (it may have expired)."
#: The chat commands and what each does (Telegram's command menu and the help text).
COMMANDS = [
    ("imagine", "Draw a picture: /imagine a red bird --seed 42"),
    ("queue", "Your pictures in progress"),
    ("cancel", "Cancel a picture (your latest if no id)"),
    ("show", "A result again, with its buttons: /show JOB_ID"),
    ("settings", "Your defaults: --engine, --steps, --size, --n, --ar, or reset"),
    ("models", "The models and LoRAs you can choose with --model and --lora"),
    ("help", "How to use this bot"),
]
HELP_TEXT = "\n".join(
    [
        "Send me a description and I draw it twice: with DF-GAN and with a diffusion model.\n",
        "In a private chat just type the prompt; in groups use /imagine <prompt>.",
        "Send a picture with the prompt to draw from it; --strength 0.0-1.0 says how much is redrawn.",
        "Under a result: U1–U4 post one picture full size, V1–V4 draw a variation of it, 🔄 draws "
        "it all again, ✏️ Remix redraws a picture with an edited prompt.",
        f"Options: {FLAG_HELP}.\n",
        *(f"/{name} — {what}" for name, what in COMMANDS[1:]),
    ]
)
#: The status message a job starts with, until its place in the queue is known.
QUEUEING_TEXT = "Queued…"
#: The first answer to a prompt or a button, before the job is queued, per kind of request.
ACK_TEXTS = {
    "imagine": QUEUEING_TEXT,
    "reroll": "Drawing it again…",
    "variation": "Drawing a variation…",
    "remix": "Remixing…",
    "upscale": "Upscaling…",
}
#: The same for a button under one picture (``{n}``: its 1-based number).
PICTURE_ACK_TEXTS = {
    "variation": "Drawing a variation of picture {n}…",
    "remix": "Remixing picture {n}…",
    "upscale": "Upscaling picture {n}…",
}
#: What a front-end asks when ✏️ Remix is pressed (Telegram: the person replies to this message).
REMIX_ASK_TEXT = "Reply to this message with the new prompt for picture {n} (it was: “{prompt}”)."

#: After the DF-GAN model in Info when it was chosen for the prompt's words (core.prompt_vocabulary).
AUTO_NOTE = " (chosen for words the shapes model does not know)"


@dataclass(frozen=True)
class Refused:
    """The request cannot be done: ``message`` says why (``code`` is stable, for API clients and
    tests; ``retry_after``: seconds until a limit lifts)."""

    code: str
    message: str
    retry_after: float | None = None
    ok: ClassVar[bool] = False

    @classmethod
    def of(cls, error: InputError) -> Refused:
        """The refusal an :class:`InputError` describes."""
        return cls(error.code, error.message, error.retry_after)

    @property
    def text(self) -> str:
        """What the person is told."""
        return self.message

    def error(self) -> InputError:
        """The same answer as an :class:`InputError` (for code that raises or serialises those)."""
        return InputError(self.code, self.message, self.retry_after)


@dataclass(frozen=True)
class Prepared:
    """A valid request, not queued yet: ``text`` is the first answer ("Queued…"); a front-end that
    must show it before queueing (to record its message id) passes it to ``service.submit``."""

    request: JobRequest
    kind: str = "imagine"
    #: The picture (0-based) a variation, remix or upscale starts from; None for a whole job.
    index: int | None = None
    ok: ClassVar[bool] = True

    @property
    def text(self) -> str:
        """ "Queued…", "Drawing it again…", "Drawing a variation of picture 2…" …"""
        if self.index is not None and self.kind in PICTURE_ACK_TEXTS:
            return PICTURE_ACK_TEXTS[self.kind].format(n=self.index + 1)
        return ACK_TEXTS[self.kind]


@dataclass(frozen=True)
class Queued:
    """A job was queued: ``position`` in the queue (None once running), ``notice`` when no live
    worker can draw it yet."""

    record: JobRecord
    position: int | None
    notice: str | None = None
    ok: ClassVar[bool] = True

    @property
    def text(self) -> str:
        """The short status line ("Queued — position 2")."""
        return status_line(self.record, self.position, self.notice)

    @property
    def titled_text(self) -> str:
        """The status line that also says what is drawn ("Queued “a cat” (dfgan, seed 5), position 2.")."""
        return status_line(self.record, self.position, self.notice, titled=True)


@dataclass(frozen=True)
class Cancelled:
    """One of the caller's jobs was cancelled."""

    record: JobRecord
    ok: ClassVar[bool] = True

    @property
    def text(self) -> str:
        """Which one."""
        return f"Cancelled “{self.record.request.prompt}”."


@dataclass(frozen=True)
class JobList:
    """The caller's unfinished jobs, oldest first, with their queue positions."""

    jobs: list[tuple[JobRecord, int | None]] = field(default_factory=list)
    ok: ClassVar[bool] = True

    @property
    def lines(self) -> list[str]:
        """One status line per job."""
        return [queue_line(record, position) for record, position in self.jobs]

    @property
    def text(self) -> str:
        """The lines, or that there is nothing."""
        return "\n".join(self.lines) if self.jobs else NO_JOBS_TEXT


@dataclass(frozen=True)
class SettingsShown:
    """The caller's defaults after the action (the server's where they set none)."""

    engines: list[str]
    steps: int
    size: int
    count: int
    #: The default ``--ar`` (None: square).
    aspect: str | None = None
    ok: ClassVar[bool] = True

    @property
    def summary(self) -> str:
        """``engines dfgan, steps 2, size 64, count 1`` (and ``, ar 16:9``; for option-style commands)."""
        shape = f", ar {self.aspect}" if self.aspect else ""
        engines = ", ".join(self.engines)
        return f"engines {engines}, steps {self.steps}, size {self.size}, count {self.count}{shape}"

    @property
    def text(self) -> str:
        """The defaults as the flags that set them, and how to change them."""
        shape = f" --ar {self.aspect}" if self.aspect else ""
        return (
            f"Your defaults: --engine {','.join(self.engines)} --steps {self.steps} "
            f"--size {self.size} --n {self.count}{shape}\n"
            "Change them with /settings --engine dfgan --steps 30, or /settings reset."
        )


@dataclass(frozen=True)
class JobSettings:
    """Everything needed to draw a job again."""

    record: JobRecord
    ok: ClassVar[bool] = True

    @property
    def text(self) -> str:
        """Prompt, engines, seed, steps, size (with the aspect and the pictures' width x height),
        count, then what was set of: the negative prompt, the model, the LoRAs, the strength of a
        picture it started from."""
        req, record = self.record.request, self.record
        shape = f" · ar {req.aspect} ({record.width}×{record.height})" if req.aspect else ""
        text = (
            f"“{req.prompt}” · engines {', '.join(req.engines)} · seed {record.seed} · "
            f"steps {record.steps} · size {record.size}{shape} · n {req.count}"
        )
        drawn_from = req.image_key is not None and req.strength is not None
        extras = [
            f"no “{req.negative_prompt}”" if req.negative_prompt else "",
            f"model {req.model}" if req.model else "",
            f"DF-GAN model {req.dfgan_model}{AUTO_NOTE if req.dfgan_auto else ''}" if req.dfgan_model else "",
            " ".join(f"lora {lora.name}:{lora.weight:g}" for lora in req.loras),
            f"from a picture at strength {req.strength:g}" if drawn_from else "",
        ]
        return " · ".join([text, *filter(None, extras)])


@dataclass(frozen=True)
class PictureOut:
    """One stored picture to post full size: ``image_key`` in the image store (core.store.ImageStore)."""

    engine: str
    version: str
    image_key: str
    width: int
    height: int
    #: The channel shows this flagged picture behind a spoiler (core.nsfw).
    spoiler: bool = False


@dataclass(frozen=True)
class Picked:
    """U-n: picture ``index`` (0-based) of each engine of the job, full size, no drawing."""

    record: JobRecord
    index: int
    pictures: list[PictureOut] = field(default_factory=list)
    ok: ClassVar[bool] = True

    @property
    def text(self) -> str:
        """The caption: "Picture 2 of job 0123abcd… — DF-GAN, Diffusion"."""
        engines = ", ".join(ENGINE_TITLES.get(p.engine, p.engine) for p in self.pictures)
        return f"Picture {self.index + 1} of job {self.record.id[:8]}… — {engines}"


@dataclass(frozen=True)
class ResultShown:
    """``/show <job>``: the front-end posts the job's paired image again with its result buttons
    (core.result_buttons.result_buttons)."""

    record: JobRecord
    ok: ClassVar[bool] = True

    @property
    def text(self) -> str:
        """The caption: the job's prompt, id and seed."""
        record = self.record
        return f"“{record.request.prompt}” · job {record.id} · seed {record.seed}"


@dataclass(frozen=True)
class RemixPrompt:
    """✏️ Remix was pressed: the front-end asks for the edited prompt of picture ``index``
    (Discord: a modal prefilled with ``prompt``; Telegram: ``text``, answered by a reply; web: an
    edit box) and sends it as ``Vary(record.id, index, prompt=new)``."""

    record: JobRecord
    index: int
    ok: ClassVar[bool] = True

    @property
    def prompt(self) -> str:
        """The job's prompt, to edit."""
        return self.record.request.prompt

    @property
    def text(self) -> str:
        """What the person is asked."""
        return REMIX_ASK_TEXT.format(n=self.index + 1, prompt=self.prompt)


@dataclass(frozen=True)
class RetrainQueued:
    """An admin's training run was queued."""

    run: TrainRun
    ok: ClassVar[bool] = True

    @property
    def text(self) -> str:
        """The run id, what it trains, and the promotion rule (the same words on every platform)."""
        run = self.run
        what = f"{run.epochs} epoch{'s' if run.epochs != 1 else ''}"
        if run.max_steps is not None:
            what = f"{run.max_steps} steps"
        return (
            f"Queued training run {run.id}: {MODEL_TITLES[run.model]} on {run.dataset}, {what}. "
            "A train worker runs it; "
            "the new model is promoted only if it evaluates at least as well as the current one."
        )


@dataclass(frozen=True)
class RetrainCancelled:
    """An admin's training run was cancelled."""

    run: TrainRun
    ok: ClassVar[bool] = True

    @property
    def text(self) -> str:
        """Which run, and what happens to a running one."""
        run = self.run
        return (
            f"Cancelled training run {run.id} ({MODEL_TITLES[run.model]} on {run.dataset}); "
            "a running one stops at its next progress report and registers nothing."
        )


@dataclass(frozen=True)
class ModelShown:
    """The engines and models this deployment runs."""

    engines: list[str]
    dfgan_checkpoint: str | None
    diffusion_model: str | None
    ok: ClassVar[bool] = True

    @property
    def text(self) -> str:
        """One line each."""
        return "\n".join(
            [
                f"Engines: {', '.join(self.engines)}",
                f"DF-GAN checkpoint: {self.dfgan_checkpoint or 'shipped default'}",
                f"Diffusion model: {self.diffusion_model or 'shipped default'}",
            ]
        )


#: How many versions ``/model list`` shows (the newest).
VERSIONS_SHOWN = 10


@dataclass(frozen=True)
class ModelVersionsShown:
    """The registered versions of model ``family`` (``versions``: (name, dataset, score on its answer
    key or None), oldest first) and the one in use (``promoted``; None: the configured default)."""

    family: str
    versions: list[tuple[str, str, float | None]]
    promoted: str | None
    ok: ClassVar[bool] = True

    @property
    def text(self) -> str:
        """The newest versions, one a line, * marking the one in use."""
        title = MODEL_TITLES[self.family]
        if not self.versions:
            lines = [f"No {title} versions are registered yet; /retrain makes one."]
        else:
            older = len(self.versions) - VERSIONS_SHOWN
            lines = [f"{title} versions (newest last{f', {older} older not shown' if older > 0 else ''}):"]
            for name, dataset, score in self.versions[-VERSIONS_SHOWN:]:
                mark = "*" if name == self.promoted else "-"
                shown = "no score" if score is None else f"score {score:.3f}"
                lines.append(f"{mark} {name} (trained on {dataset}, {shown})")
        lines.append(f"In use: {self.promoted or 'the configured default'}. {_promote_hint(self.family)}")
        return "\n".join(lines)


@dataclass(frozen=True)
class ModelPromoted:
    """``version`` of ``family`` is the one the workers draw with now."""

    family: str
    version: str
    ok: ClassVar[bool] = True

    @property
    def text(self) -> str:
        """What changed, and how to undo it."""
        return (
            f"Promoted {self.version}: new {MODEL_TITLES[self.family]} pictures are drawn with it from "
            f"each worker's next batch on. Undo with /model rollback{_family_option(self.family)}."
        )


@dataclass(frozen=True)
class ModelRolledBack:
    """``family``'s promotion went back to ``back_to`` (None: the configured default)."""

    family: str
    back_to: str | None
    ok: ClassVar[bool] = True

    @property
    def text(self) -> str:
        """What the workers draw with now."""
        model = self.back_to or "the configured default model"
        return (
            f"Rolled back {MODEL_TITLES[self.family]}: new pictures are drawn with {model} from "
            "each worker's next batch on."
        )


def _family_option(family: str) -> str:
    return "" if family == "dfgan" else f" model:{family}"


def _promote_hint(family: str) -> str:
    return f"/model promote VERSION or /model rollback{_family_option(family)} to change it."


@dataclass(frozen=True)
class ModelsShown:
    """The diffusion and DF-GAN models (``models``: :func:`core.model_catalog.catalogue_text`, one
    line each under its engine) and the LoRAs on offer."""

    models: str
    loras: list[str] = field(default_factory=list)
    ok: ClassVar[bool] = True

    @property
    def text(self) -> str:
        """The models with what each is good at, then the LoRAs, and how to choose them."""
        loras = ", ".join(self.loras) if self.loras else "none are installed on this server"
        return f"Models (--model NAME):\n{self.models}\nLoRAs (--lora NAME or NAME:WEIGHT): {loras}"


#: What each rule does with a flagged picture, for :class:`NsfwRuleShown`.
NSFW_RULE_TEXTS = {
    "withhold": "flagged pictures are withheld",
    "spoiler": "flagged pictures are posted behind a spoiler",
    "allow": "flagged pictures are posted as they are",
}


@dataclass(frozen=True)
class NsfwRuleShown:
    """A channel's rule for pictures the safety checker flags, after ``/nsfw``: ``channel_rule`` (an
    admin's, None: the server's), ``rule`` (what applies), ``changed`` (this action set or cleared it)."""

    rule: str
    channel_rule: str | None
    changed: bool = False
    ok: ClassVar[bool] = True

    @property
    def text(self) -> str:
        """Which rule applies here and why, e.g. "This channel's NSFW rule is now spoiler: …"."""
        if self.channel_rule is None:
            start = "This channel now follows" if self.changed else "This channel follows"
            return f"{start} the server's NSFW rule: {self.rule} ({NSFW_RULE_TEXTS[self.rule]})."
        verb = "is now" if self.changed else "is"
        text = f"This channel's NSFW rule {verb} {self.channel_rule}: {NSFW_RULE_TEXTS[self.channel_rule]}."
        if self.channel_rule != self.rule:
            text += " This channel is not marked NSFW on Discord, so they are withheld here."
        return text


@dataclass(frozen=True)
class HelpShown:
    """How to use the bot."""

    ok: ClassVar[bool] = True

    @property
    def text(self) -> str:
        """The help text."""
        return HELP_TEXT


Reply = (
    Refused
    | Prepared
    | Queued
    | Cancelled
    | JobList
    | SettingsShown
    | JobSettings
    | Picked
    | ResultShown
    | RemixPrompt
    | RetrainQueued
    | RetrainCancelled
    | ModelShown
    | ModelVersionsShown
    | ModelPromoted
    | ModelRolledBack
    | ModelsShown
    | NsfwRuleShown
    | HelpShown
)
