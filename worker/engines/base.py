"""The contract every engine fulfils."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from PIL import Image

from training.device import resolve_device

#: Called with (step, total_steps); returns True when the run should stop (job cancelled).
ProgressCallback = Callable[[int, int], bool]

#: A live preview an engine offers with a progress report, made only if called: one list of small
#: pictures per request of the batch (empty for a request the running pipeline call does not draw).
PreviewSource = Callable[[], list[list[Image.Image]]]


def report_step(progress: ProgressCallback, step: int, total: int, preview: PreviewSource | None) -> bool:
    """``progress(step, total)``, first offering ``preview`` to a callback that takes previews (one
    with an ``offer_preview(source)`` method, like the worker's); plain callbacks never see it."""
    offer = getattr(progress, "offer_preview", None)
    if offer is not None and preview is not None:
        offer(preview)
    return progress(step, total)


__all__ = ["resolve_device"]  # the engines' device choice is training's (one rule for both)


class GenerationCancelled(Exception):
    """Raised by an engine when the progress callback asked it to stop."""


@dataclass(frozen=True)
class GenerationRequest:
    """One prompt to draw ``len(seeds)`` times. Engines may receive several of these as a batch."""

    prompt: str
    seeds: list[int]
    steps: int = 20
    size: int = 64
    #: The picture's shape (``--ar``, core.aspect); None: ``size`` x ``size``. Engines that draw squares
    #: only centre-crop theirs to this shape.
    width: int | None = None
    height: int | None = None
    negative_prompt: str | None = None
    #: Classifier-free guidance; None uses the model's own default (SD 7.5, Flux 3.5, ours 3.0).
    guidance_scale: float | None = None
    #: Image-to-image: the picture to start from (None: text-to-image) and how much of it to redraw.
    image: Image.Image | None = None
    strength: float = 0.6
    #: LoRAs to apply while drawing this request: (name in the operator's folder, weight).
    loras: tuple[tuple[str, float], ...] = ()
    #: What to do with a picture the safety checker flags: withhold | spoiler | allow (core.nsfw).
    nsfw: str = "withhold"
    #: A variation by an engine that draws from noise (DF-GAN): (the source picture's seed, mix), each
    #: picture's noise a normalised mix of that seed's (1 - mix) and its own seed's (mix).
    noise_near: tuple[int, float] | None = None
    #: When the source picture was itself such a variation: the seeds its noise was mixed from, oldest
    #: first (its noise: each seed's mixed into the one before, then the source seed's).
    noise_chain: tuple[int, ...] = ()

    @property
    def dimensions(self) -> tuple[int, int]:
        """(width, height) of each picture."""
        return (self.width or self.size, self.height or self.size)


@dataclass
class EngineInfo:
    """What the paired image's label says about the engine that drew a picture."""

    name: str
    version: str
    extra: dict[str, str] = field(default_factory=dict)


class Engine(Protocol):
    """A loaded text-to-image model. Loaded once per worker process; ``generate`` may be called often."""

    info: EngineInfo

    def generate(
        self, requests: list[GenerationRequest], progress: ProgressCallback | None = None
    ) -> list[list[Image.Image]]:
        """Draw every request; returns one list of images per request, ``len(seeds)`` images each."""
        ...
