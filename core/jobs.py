"""Job types shared by front-ends, the queue client and the workers."""

from __future__ import annotations

import time
import uuid
from enum import StrEnum

from pydantic import BaseModel, Field, model_validator

from core.aspect import dimensions


class JobStatus(StrEnum):
    """Where a job is in its life."""

    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        """True once the job will not change any more (delivery aside)."""
        return self in (JobStatus.DONE, JobStatus.FAILED, JobStatus.CANCELLED)


class Conversation(BaseModel):
    """Where a job came from and where its result goes back to."""

    platform: str = Field(description="web | discord | telegram | cli")
    chat_id: str
    thread_id: str | None = None
    reply_to: str | None = None
    interaction_token: str | None = None
    application_id: str | None = None
    status_message_id: str | None = Field(
        default=None, description="The bot's 'Queued…' message that the sender removes when done"
    )
    attachment_size_limit: int | None = Field(
        default=None, description="The platform's per-upload byte limit here (Discord: per interaction)"
    )


class LoraChoice(BaseModel):
    """One LoRA a job applies: a name from the operator's LoRA folder and its weight."""

    name: str
    weight: float = 1.0


class SourcePicture(BaseModel):
    """The picture of an earlier job that a new job starts from (a result button: V-n, remix,
    upscale): job ``job_id``'s picture ``index`` (0-based) of ``engine``, drawn with ``seed``."""

    job_id: str
    engine: str
    index: int
    seed: int
    kind: str = Field(description="variation | remix | upscale")
    #: When the source picture was itself a DF-GAN variation, the seeds its noise was mixed from,
    #: oldest first (empty: its noise is ``seed``'s alone), so a variation of it stays near it.
    earlier_seeds: list[int] = Field(default_factory=list)

    @property
    def varies(self) -> bool:
        """A variation or remix (drawn near the source picture), not an upscale."""
        return self.kind in ("variation", "remix")


class JobRequest(BaseModel):
    """What a user asked for, after parsing, before validation."""

    prompt: str
    engines: list[str] = Field(default_factory=list)
    seed: int | None = None
    count: int = 1
    steps: int | None = None
    size: int | None = None
    aspect: str | None = Field(
        default=None, description="--ar width:height in lowest terms (16:9); None: square (core.aspect)"
    )
    negative_prompt: str | None = None
    image_key: str | None = Field(
        default=None, description="ib:upload:<id> of a validated upload (core.uploads) to start from"
    )
    strength: float | None = Field(
        default=None, description="Image-to-image: how much of the upload is redrawn, 0.0-1.0"
    )
    model: str | None = Field(
        default=None,
        description="Diffusion model name; None: the default one. Before validation: the --model as "
        "typed, which may name a DF-GAN model (core.model_catalog.check_choices moves it)",
    )
    dfgan_model: str | None = Field(default=None, description="DF-GAN model name; None: the default one")
    dfgan_auto: bool = Field(
        default=False,
        description="dfgan_model was chosen for the prompt's words, not by the user "
        "(core.prompt_vocabulary): chosen again whenever the prompt changes",
    )
    loras: list[LoraChoice] = Field(default_factory=list)
    nsfw: str | None = Field(
        default=None, description="withhold | spoiler | allow for this channel; None: the server's rule"
    )
    source: SourcePicture | None = Field(
        default=None, description="The earlier job's picture this job varies, remixes or upscales"
    )
    user: str = Field(description="platform:user_id, used for rate limits and admin checks")
    conversation: Conversation


class NsfwDecision(BaseModel):
    """What happened to one picture the safety checker flagged, and why."""

    index: int = Field(description="Which of the engine's images (0-based)")
    action: str = Field(description="withheld | spoiler | allowed")
    reason: str


class EngineResult(BaseModel):
    """One engine's part of a finished job."""

    engine: str
    version: str
    seconds: float
    image_keys: list[str]
    #: Set when the engine drew from the prompt alone although the job gave an image (DF-GAN).
    text_only: bool = False
    #: Set when the engine draws squares only and centre-cropped them to the job's aspect (DF-GAN).
    cropped: bool = False
    #: One per flagged image: what the NSFW policy did with it (core.nsfw.NsfwDecision).
    nsfw: list[NsfwDecision] = Field(default_factory=list)


#: Redis keys of live previews start with this (a front-end serves only the key its job's record names).
PREVIEW_KEY_PREFIX = "ib:preview:"


class Progress(BaseModel):
    """Latest progress report of a running job."""

    engine: str
    step: int
    total: int
    preview_key: str | None = Field(
        default=None,
        description="Redis key of a small PNG of the model's current estimate of the picture (a live "
        "preview; short TTL, a new key for each new preview); None: no preview yet, or the engine has none",
    )


class JobRecord(BaseModel):
    """The stored state of a job; the single source of truth, kept in Redis."""

    id: str = Field(default_factory=lambda: uuid.uuid4().hex[:16])
    request: JobRequest
    seed: int
    steps: int
    size: int
    #: The pictures' width and height: ``size`` and the request's aspect (core.aspect.dimensions);
    #: filled in from those when not given (and for records stored before aspect ratios).
    width: int = 0
    height: int = 0
    status: JobStatus = JobStatus.QUEUED
    created_at: float = Field(default_factory=time.time)
    started_at: float | None = None
    finished_at: float | None = None
    delivered_at: float | None = None
    progress: Progress | None = None
    results: list[EngineResult] = Field(default_factory=list)
    pair_key: str | None = None
    error: str | None = None
    worker: str | None = None
    lease_until: float | None = None
    attempts: int = 0
    batch_size: int = 1
    batch_id: str | None = Field(default=None, description="Which draw of a worker this job was part of")

    @model_validator(mode="after")
    def _fill_dimensions(self) -> JobRecord:
        if not self.width or not self.height:
            self.width, self.height = dimensions(self.size, self.request.aspect)
        return self

    @property
    def seeds(self) -> list[int]:
        """One seed per image: the job's seed, then the following ones."""
        return [(self.seed + i) % (2**32) for i in range(self.request.count)]

    @property
    def engine_seconds(self) -> float:
        """Time the engines spent drawing this job."""
        return sum(r.seconds for r in self.results)
