"""The diffusion models and LoRAs an operator offers, by name (torch-free; chat never names a path).

Models: ``IMAGINEBOT_DIFFUSION_MODELS=name=folder|description,…`` plus the default model, always
there as :data:`DEFAULT_MODEL` (``IMAGINEBOT_DIFFUSION_MODEL``, or the shipped one).
LoRAs: the ``.safetensors`` files in ``IMAGINEBOT_LORA_DIR``, named by their stem.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from core.errors import InputError
from core.jobs import JobRequest, LoraChoice
from core.settings import Settings
from core.uploads import check_strength, is_upload_key

#: The name of the default diffusion model (``IMAGINEBOT_DIFFUSION_MODEL`` or the shipped one).
DEFAULT_MODEL = "default"
#: Model and LoRA names: what a user may type; never a path.
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
MAX_LORAS = 4
#: LoRA weights a user may ask for (0 leaves the model as it is; negative weights invert a LoRA).
LORA_WEIGHT_RANGE = (-2.0, 2.0)


@dataclass(frozen=True)
class DiffusionModel:
    """One model users may pick: its name, where it lives (None: the shipped one) and what it is for."""

    name: str
    folder: str | None
    description: str


def _default_model(settings: Settings) -> DiffusionModel:
    description = settings.diffusion_default_description or (
        "the configured model" if settings.diffusion_model else "the shipped model (trained on shapes)"
    )
    return DiffusionModel(DEFAULT_MODEL, settings.diffusion_model, description)


def parse_models(settings: Settings) -> dict[str, DiffusionModel]:
    """Name -> model: the default first, then ``IMAGINEBOT_DIFFUSION_MODELS`` in order.

    Raises:
        ValueError: an entry is not ``name=folder[|description]``, a name is not a plain name, or
            repeats (an operator's configuration error, reported at start).
    """
    models = {DEFAULT_MODEL: _default_model(settings)}
    for entry in settings.diffusion_models.split(","):
        if not entry.strip():
            continue
        name, sep, rest = entry.partition("=")
        folder, _, description = rest.partition("|")
        name, folder = name.strip(), folder.strip()
        if not sep or not folder or not NAME.fullmatch(name):
            raise ValueError(
                f"IMAGINEBOT_DIFFUSION_MODELS entry {entry.strip()!r} is not name=folder|description"
            )
        if name.lower() in (m.lower() for m in models):
            raise ValueError(f"IMAGINEBOT_DIFFUSION_MODELS names {name!r} twice")
        models[name] = DiffusionModel(name, folder, description.strip() or folder)
    return models


def models_text(settings: Settings) -> str:
    """One line per model: its name and what it is good at (for ``/models`` and refusals)."""
    return "\n".join(f"• {m.name}: {m.description}" for m in parse_models(settings).values())


def check_model(settings: Settings, name: str | None) -> str:
    """The catalogue's spelling of model ``name`` (any case; None: the default).

    Raises:
        InputError: ``unknown_model``, with the list of models.
    """
    if name is None or not name.strip():
        return DEFAULT_MODEL
    models = parse_models(settings)
    wanted = name.strip().lower()
    for known in models:
        if known.lower() == wanted:
            return known
    raise InputError(
        "unknown_model", f"There is no model called '{name.strip()[:40]}'. Models:\n{models_text(settings)}"
    )


def served_models(settings: Settings) -> list[str]:
    """The model names this worker serves (``IMAGINEBOT_WORKER_MODELS``, empty: all of them).

    Raises:
        ValueError: the list names a model that is not configured.
    """
    models = parse_models(settings)
    wanted = [n.strip() for n in settings.worker_models.split(",") if n.strip()]
    unknown = [n for n in wanted if n not in models]
    if unknown:
        raise ValueError(f"IMAGINEBOT_WORKER_MODELS names unknown models {unknown}; known: {list(models)}")
    return wanted or list(models)


def lora_names(settings: Settings) -> list[str]:
    """The LoRAs on offer: stems of the ``.safetensors`` files in ``IMAGINEBOT_LORA_DIR``, sorted."""
    folder = settings.lora_dir
    if folder is None or not folder.is_dir():
        return []
    return sorted(p.stem for p in folder.glob("*.safetensors") if p.is_file() and NAME.fullmatch(p.stem))


def parse_lora(text: str) -> LoraChoice:
    """``NAME`` or ``NAME:WEIGHT`` (weight 1.0 when left out) as typed after ``--lora``; the name is
    checked for shape only (:func:`check_loras` checks that it exists)."""
    name, sep, weight_text = text.strip().partition(":")
    if not NAME.fullmatch(name):
        raise InputError(
            "bad_lora", f"'{text.strip()[:40]}' is not a LoRA name; use --lora NAME or NAME:WEIGHT."
        )
    weight = 1.0
    if sep:
        try:
            weight = float(weight_text)
        except ValueError:
            raise InputError(
                "bad_lora", f"The LoRA weight in '{text.strip()[:40]}' is not a number."
            ) from None
    return LoraChoice(name=name, weight=weight)


def check_loras(settings: Settings, loras: list[LoraChoice]) -> list[LoraChoice]:
    """``loras`` when each names a LoRA on offer (any case), with a weight in range, at most
    :data:`MAX_LORAS`, none twice; names come back in the folder's spelling.

    Raises:
        InputError: ``bad_lora`` (with the list of LoRAs on offer when the name is unknown).
    """
    if len(loras) > MAX_LORAS:
        raise InputError("bad_lora", f"At most {MAX_LORAS} LoRAs per picture.")
    offered = {n.lower(): n for n in lora_names(settings)}
    low, high = LORA_WEIGHT_RANGE
    checked: list[LoraChoice] = []
    for lora in loras:
        name = offered.get(lora.name.lower()) if NAME.fullmatch(lora.name) else None
        if name is None:
            listing = ", ".join(offered.values()) or "none are installed on this server"
            raise InputError("bad_lora", f"There is no LoRA called '{lora.name[:40]}'. LoRAs: {listing}.")
        if not low <= lora.weight <= high:
            raise InputError("bad_lora", f"A LoRA weight must be between {low} and {high}.")
        if any(c.name == name for c in checked):
            raise InputError("bad_lora", f"The LoRA '{name}' is named twice.")
        checked.append(LoraChoice(name=name, weight=lora.weight))
    return checked


def batch_model_key(model: str | None, loras: list[LoraChoice]) -> tuple[str, tuple[tuple[str, float], ...]]:
    """The part of a job's batch key that model choice adds: jobs share a batch (one engine, one set of
    applied LoRAs) only when these are equal."""
    return model or DEFAULT_MODEL, tuple((lora.name, lora.weight) for lora in loras)


def check_choices(settings: Settings, request: JobRequest) -> JobRequest:
    """``request`` with its model, LoRAs and image-to-image options checked and normalised (for the
    conversation service to call beside :func:`core.validation.validate_request`).

    Raises:
        InputError: ``unknown_model``, ``bad_lora``, ``strength_out_of_range``, ``strength_without_image``
            (a strength given with no image to start from), ``image_expired`` (not an upload key), or
            ``model_without_diffusion`` (a model or LoRA for a job the diffusion engine does not draw).
    """
    if request.image_key is None and request.strength is not None:
        raise InputError(
            "strength_without_image", "--strength needs a picture to start from: attach an image."
        )
    if request.image_key is not None and not is_upload_key(request.image_key):
        raise InputError("image_expired", "The image this job starts from has expired; send it again.")
    model = check_model(settings, request.model)
    loras = check_loras(settings, request.loras)
    if (model != DEFAULT_MODEL or loras) and "diffusion" not in (request.engines or settings.default_engines):
        raise InputError(
            "model_without_diffusion",
            "--model and --lora choose how the diffusion engine draws; it is not in this job.",
        )
    update = {
        "model": None if model == DEFAULT_MODEL else model,  # one spelling of "the default" in batch keys
        "loras": loras,
        "strength": None if request.image_key is None else check_strength(request.strength),
    }
    return request.model_copy(update=update)
