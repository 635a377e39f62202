"""A job as each engine is asked to draw it, and what the engine's result records about it.

The worker's batch loop (:mod:`worker.generate`) calls these two functions, so a new option of a
job reaches the engines, the job record and the paired image's label in one place.
"""

from __future__ import annotations

from typing import Any

from PIL import Image

from core.jobs import JobRecord
from core.nsfw import decisions_of, request_policy
from core.settings import Settings
from core.uploads import DEFAULT_STRENGTH, UploadStore
from worker.engines.base import GenerationRequest

#: Engines that can start from a picture; the others draw from the prompt alone and say so.
IMAGE_ENGINES = ("diffusion", "upscale")
#: How far a variation's noise moves from the source picture's (0: the same noise, 1: a fresh seed's).
NOISE_MIX = 0.25
#: Engines that draw squares only: they centre-crop to the job's aspect (never stretch) and say so.
SQUARE_ENGINES = ("dfgan",)


def generation_request(
    settings: Settings, uploads: UploadStore, engine_name: str, job: JobRecord
) -> GenerationRequest:
    """``job`` as engine ``engine_name`` draws it: with its upload (fetched from Redis by key, for
    engines that take one), strength, LoRAs and the channel's NSFW rule.

    Raises:
        core.errors.InputError: the upload expired before the job was drawn.
    """
    request = job.request
    image: Image.Image | None = None
    if request.image_key and engine_name in IMAGE_ENGINES:
        image = uploads.image(request.image_key)
    return GenerationRequest(
        prompt=request.prompt,
        seeds=job.seeds,
        steps=job.steps,
        size=job.size,
        width=job.width,
        height=job.height,
        negative_prompt=request.negative_prompt,
        image=image,
        strength=DEFAULT_STRENGTH if request.strength is None else request.strength,
        loras=tuple((lora.name, lora.weight) for lora in request.loras),
        nsfw=request_policy(settings, request).value,
        noise_near=_noise_near(engine_name, job),
        noise_chain=tuple(request.source.earlier_seeds) if request.source else (),
    )


def _noise_near(engine_name: str, job: JobRecord) -> tuple[int, float] | None:
    """A variation's (source seed, mix) for an engine that draws from noise, not from a picture."""
    source = job.request.source
    if source is None or not source.varies or engine_name in IMAGE_ENGINES:
        return None
    return (source.seed, NOISE_MIX)


def result_marks(engine_name: str, job: JobRecord, images: list[Image.Image]) -> dict[str, Any]:
    """The engine result's ``text_only``, ``cropped`` and ``nsfw`` fields for ``job``'s ``images``."""
    text_only = bool(job.request.image_key) and engine_name not in IMAGE_ENGINES
    text_only = text_only and _noise_near(engine_name, job) is None  # a variation draws near its picture
    cropped = job.width != job.height and engine_name in SQUARE_ENGINES
    return {"text_only": text_only, "cropped": cropped, "nsfw": decisions_of(images)}
