"""What the buttons under a result do with the job they name (U-n, V-n, remix, upscale, /show):
the pictures to post again and the new job requests. The service checks the caller first
(core.buttons) and validates the requests like any other.
"""

from __future__ import annotations

import io

from PIL import Image

from core.compose import ENGINE_TITLES
from core.conversation.actions import Vary
from core.conversation.replies import PictureOut
from core.errors import InputError
from core.jobs import EngineResult, JobRecord, JobRequest, JobStatus, SourcePicture
from core.prompt import parse_prompt
from core.store import ImageStore
from core.uploads import DEFAULT_STRENGTH, UploadStore

#: How much of the picture a diffusion variation redraws when the job gave no ``--strength``.
VARIATION_STRENGTH = DEFAULT_STRENGTH
#: The engine that draws an upscale (helper module worker/engines/upscale).
UPSCALE_ENGINE = "upscale"
#: Engines whose variation starts from the picture itself (image-to-image; the worker's
#: IMAGE_ENGINES), not from noise near its seed (DF-GAN).
FROM_PICTURE = ("diffusion",)
#: How many earlier seeds a variation of a variation keeps (older ones weigh under 0.95**64 anyway).
MAX_NOISE_CHAIN = 64
NO_PICTURES_TEXT = "That job has no pictures yet; wait for its result."
EXPIRED_PICTURE_TEXT = "That picture has expired; send the prompt again."


def finished_record(record: JobRecord) -> JobRecord:
    """``record`` when it is done with pictures; raises ``no_pictures`` otherwise."""
    if record.status != JobStatus.DONE or not any(r.image_keys for r in record.results):
        raise InputError("no_pictures", NO_PICTURES_TEXT)
    return record


def check_index(record: JobRecord, index: int) -> None:
    """Raise ``no_such_picture`` unless the job has picture ``index`` (0-based)."""
    if not 0 <= index < record.request.count:
        count = record.request.count
        raise InputError(
            "no_such_picture",
            f"That job has {count} picture{'s' if count != 1 else ''}; there is no picture {index + 1}.",
        )


def _withheld(result: EngineResult, index: int) -> bool:
    return any(d.index == index and d.action == "withheld" for d in result.nsfw)


def _shown(record: JobRecord, index: int) -> list[EngineResult]:
    """The engine results whose picture ``index`` exists and was not withheld."""
    return [r for r in record.results if index < len(r.image_keys) and not _withheld(r, index)]


def picked_pictures(images: ImageStore, record: JobRecord, index: int) -> list[PictureOut]:
    """Picture ``index`` of every engine of a finished job, as stored (withheld ones left out).
    Raises ``expired`` when none is stored any more."""
    pictures = []
    for result in _shown(finished_record(record), index):
        key = result.image_keys[index]
        png = images.get(key)
        if png is None:
            continue
        with Image.open(io.BytesIO(png)) as image:
            width, height = image.size
        spoiler = any(d.index == index and d.action == "spoiler" for d in result.nsfw)
        pictures.append(PictureOut(result.engine, result.version, key, width, height, spoiler))
    if not pictures:
        raise InputError("expired", EXPIRED_PICTURE_TEXT)
    return pictures


def source_picture(record: JobRecord, index: int, engine: str | None, kind: str) -> SourcePicture:
    """Picture ``index`` of ``engine`` (None: the one a variation starts from, an image-to-image
    engine's first) as a source. Raises when it was not drawn or was withheld."""
    shown = _shown(finished_record(record), index)
    if engine is None:
        from_picture = [r for r in shown if r.engine in FROM_PICTURE]
        result = (from_picture or shown or [None])[0]
    else:
        result = next((r for r in shown if r.engine == engine), None)
    if result is None:
        title = ENGINE_TITLES.get(engine or "", engine or "any engine")
        raise InputError(
            "no_such_picture", f"Picture {index + 1} of {title} is not there (withheld or not drawn)."
        )
    return SourcePicture(
        job_id=record.id,
        engine=result.engine,
        index=index,
        seed=record.seeds[index],
        kind=kind,
        earlier_seeds=_noise_seeds(record),
    )


def _noise_seeds(record: JobRecord) -> list[int]:
    """The seeds the noise of ``record``'s DF-GAN pictures was mixed from besides their own (the
    chain of a variation of a variation …, at most :data:`MAX_NOISE_CHAIN`)."""
    source = record.request.source
    if source is None or not source.varies:
        return []
    return [*source.earlier_seeds, source.seed][-MAX_NOISE_CHAIN:]


def copied_upload(images: ImageStore, uploads: UploadStore, record: JobRecord, source: SourcePicture) -> str:
    """The source picture's PNG copied into an upload (the key image-to-image reads)."""
    result = next(r for r in record.results if r.engine == source.engine)
    png = images.get(result.image_keys[source.index])
    if png is None:
        raise InputError("expired", EXPIRED_PICTURE_TEXT)
    return uploads.put(png)


def variation_request(
    original: JobRecord, action: Vary, source: SourcePicture, upload_key: str | None
) -> JobRequest:
    """The job a V-n (or a remix: ``action.prompt``) asks for, before it is checked: the original's
    options with a new seed, starting from ``source`` (an image-to-image engine from
    ``upload_key``; DF-GAN from noise near the source's seed)."""
    request = original.request
    update: dict[str, object] = {"seed": None, "source": source, "image_key": upload_key, "strength": None}
    if upload_key is not None:
        update["strength"] = request.strength if request.strength is not None else VARIATION_STRENGTH
    if action.prompt is not None:
        edited = parse_prompt(action.prompt)
        update["prompt"] = edited.prompt
        if edited.negative_prompt is not None:
            update["negative_prompt"] = edited.negative_prompt
        if edited.strength is not None and upload_key is not None:
            update["strength"] = edited.strength
    return request.model_copy(update=update)


def upscale_request(checked: JobRequest, source: SourcePicture, upload_key: str) -> JobRequest:
    """The job an Upscale ×2 asks for: ``checked`` (the original's request, checked for the caller)
    as one picture on the upscale engine from ``upload_key``."""
    return checked.model_copy(
        update={
            "engines": [UPSCALE_ENGINE],
            "count": 1,
            "seed": source.seed,
            "image_key": upload_key,
            "strength": None,
            "source": source,
        }
    )
