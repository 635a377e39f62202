"""A finished job's paired image, composed when it is first read rather than on the GPU worker.

The worker stores each engine's pictures (the job's results) before it marks the job done, and names
the pair's key in the record (``pair_key``); composing the labelled pair and encoding it as PNG takes
a few milliseconds of CPU, more than a 64-px DF-GAN draw, so it is done by whoever first asks for the
pair: the delivery worker that posts it to a chat, or the web server that serves it to a browser.
:meth:`core.store.ImageStore.get` calls :func:`compose_stored_pair` for a missing pair key; the result
is stored, so later readers get the bytes.

Torch-free, like all of ``core``.
"""

from __future__ import annotations

import io

import redis
from PIL import Image

from core.compose import WITHHELD, Panel, compose_pair, to_png
from core.jobs import EngineResult, JobRecord, JobStatus
from core.png_metadata import pair_parameters

#: The image name of a job's paired picture (``ib:img:<job>:pair``).
PAIR = "pair"
#: The paired image's note for an engine that ignored the job's picture.
TEXT_ONLY = "text only"
#: The paired image's note for a square engine's pictures cropped to the job's aspect.
CROPPED = "square model, cropped"
#: Who withheld a picture, as the pair says it (the diffusion engine's safety checker is the only one).
WITHHELD_BY = "safety checker"


def note_for(text_only: bool, cropped: bool) -> str:
    """What the paired image says beside an engine's time (``text only``, ``square model, cropped``,
    both, or nothing)."""
    notes = [TEXT_ONLY if text_only else "", CROPPED if cropped else ""]
    return " · ".join(note for note in notes if note)


def panel_note(result: EngineResult) -> str:
    """:func:`note_for` an engine's result."""
    return note_for(result.text_only, result.cropped)


def pair_image(record: JobRecord, pictures: list[list[Image.Image]]) -> Image.Image:
    """The paired image of ``record`` from each engine's ``pictures`` (in the order of its results)."""
    panels = []
    for result, images in zip(record.results, pictures, strict=True):
        for decision in result.nsfw:
            if decision.action == "withheld" and decision.index < len(images):
                images[decision.index].info[WITHHELD] = WITHHELD_BY
        panels.append(Panel(result.engine, result.version, result.seconds, images, note=panel_note(result)))
    return compose_pair(panels, record.request.prompt, record.seed)


def compose_stored_pair(client: redis.Redis, record: JobRecord) -> bytes | None:
    """PNG bytes of ``record``'s paired image, composed from the engines' stored pictures; None when
    the job is not done or its pictures expired."""
    if record.status != JobStatus.DONE or not record.results:
        return None
    keys = [key for result in record.results for key in result.image_keys]
    blobs = iter(client.mget(keys) if keys else [])
    pictures: list[list[Image.Image]] = []
    for result in record.results:
        images = []
        for _ in result.image_keys:
            blob = next(blobs)
            if blob is None:
                return None
            images.append(Image.open(io.BytesIO(blob)))
        pictures.append(images)
    return to_png(pair_image(record, pictures), pair_parameters(record, record.results))
