"""The diffusion and DF-GAN models and the LoRAs an operator offers, by name (torch-free; chat never
names a path).

Diffusion models: ``IMAGINEBOT_DIFFUSION_MODELS=name=folder|description,…`` plus the default model,
always there as :data:`DEFAULT_MODEL` (``IMAGINEBOT_DIFFUSION_MODEL``, or the shipped one), and the
shipped emoji model, :data:`EMOJI_MODEL`.
DF-GAN models: ``IMAGINEBOT_DFGAN_MODELS`` (same syntax) plus the default DF-GAN (the configured or
shipped checkpoint, or the promoted version) and the shipped emoji model, :data:`EMOJI_MODEL`.
One ``--model NAME`` names either kind: each engine in the job draws with its own model of that name,
or with its default (see :func:`check_choices`).
LoRAs: the ``.safetensors`` files in ``IMAGINEBOT_LORA_DIR``, named by their stem.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from core.errors import InputError
from core.jobs import JobRequest, LoraChoice
from core.prompt_vocabulary import auto_dfgan_model
from core.settings import Settings
from core.uploads import check_strength, is_upload_key

#: The name of the default diffusion model (``IMAGINEBOT_DIFFUSION_MODEL`` or the shipped one).
DEFAULT_MODEL = "default"
#: The shipped DF-GAN trained on Noto emoji, offered on every server.
EMOJI_MODEL = "emoji"
#: Its folder under ``training/shipped_models`` (the worker resolves it; core knows no paths there).
EMOJI_SHIPPED_FOLDER = "dfgan-emoji-64"
#: The folder of the shipped diffusion model trained on emoji, offered under the same name.
EMOJI_DIFFUSION_SHIPPED_FOLDER = "diffusion-emoji-32"
#: What both emoji models are for, in the catalogue.
EMOJI_DESCRIPTION = "everyday words and objects (emoji; rough)"
#: Model and LoRA names: what a user may type; never a path.
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
MAX_LORAS = 4
#: LoRA weights a user may ask for (0 leaves the model as it is; negative weights invert a LoRA).
LORA_WEIGHT_RANGE = (-2.0, 2.0)


@dataclass(frozen=True)
class DiffusionModel:
    """One model users may pick: its name, where it lives (None: the shipped default), whether that
    folder is one of the project's shipped models (a name under ``training/shipped_models``) and what
    it is for."""

    name: str
    folder: str | None
    description: str
    shipped: bool = False


@dataclass(frozen=True)
class DfganModel:
    """One DF-GAN model users may pick: its name, its folder (None: the default DF-GAN, which follows
    promotions), whether that folder is one of the project's shipped models (a name under
    ``training/shipped_models``) and what it is for."""

    name: str
    folder: str | None
    description: str
    shipped: bool = False


def _default_model(settings: Settings) -> DiffusionModel:
    description = settings.diffusion_default_description or (
        "the configured model" if settings.diffusion_model else "the shipped model (trained on shapes)"
    )
    return DiffusionModel(DEFAULT_MODEL, settings.diffusion_model, description)


def parse_models(settings: Settings) -> dict[str, DiffusionModel]:
    """Name -> model: the default first, the shipped emoji model, then ``IMAGINEBOT_DIFFUSION_MODELS``
    in order.

    Raises:
        ValueError: an entry is not ``name=folder[|description]``, a name is not a plain name, or
            repeats (an operator's configuration error, reported at start; ``emoji`` is taken).
    """
    models = {
        DEFAULT_MODEL: _default_model(settings),
        EMOJI_MODEL: DiffusionModel(
            EMOJI_MODEL, EMOJI_DIFFUSION_SHIPPED_FOLDER, EMOJI_DESCRIPTION, shipped=True
        ),
    }
    for name, folder, description in _entries(settings.diffusion_models, "DIFFUSION_MODELS", list(models)):
        models[name] = DiffusionModel(name, folder, description)
    return models


def parse_dfgan_models(settings: Settings) -> dict[str, DfganModel]:
    """Name -> DF-GAN model: the default, the shipped emoji model, then ``IMAGINEBOT_DFGAN_MODELS``.

    Raises:
        ValueError: as :func:`parse_models`, for ``IMAGINEBOT_DFGAN_MODELS`` (``emoji`` is taken).
    """
    default = "the configured model" if settings.dfgan_checkpoint else "the shipped model (shapes and scenes)"
    models = {
        DEFAULT_MODEL: DfganModel(DEFAULT_MODEL, None, default),
        EMOJI_MODEL: DfganModel(EMOJI_MODEL, EMOJI_SHIPPED_FOLDER, EMOJI_DESCRIPTION, shipped=True),
    }
    for name, folder, description in _entries(settings.dfgan_models, "DFGAN_MODELS", list(models)):
        models[name] = DfganModel(name, folder, description)
    return models


def _entries(text: str, setting: str, taken: list[str]) -> list[tuple[str, str, str]]:
    """(name, folder, description) of each ``name=folder|description`` entry of ``text``; the
    description is the folder when left out.

    Raises:
        ValueError: an entry is malformed, or a name repeats (also one in ``taken``), any case.
    """
    entries: list[tuple[str, str, str]] = []
    seen = [name.lower() for name in taken]
    for entry in text.split(","):
        if not entry.strip():
            continue
        name, sep, rest = entry.partition("=")
        folder, _, description = rest.partition("|")
        name, folder = name.strip(), folder.strip()
        if not sep or not folder or not NAME.fullmatch(name):
            raise ValueError(f"IMAGINEBOT_{setting} entry {entry.strip()!r} is not name=folder|description")
        if name.lower() in seen:
            raise ValueError(f"IMAGINEBOT_{setting} names {name!r} twice")
        seen.append(name.lower())
        entries.append((name, folder, description.strip() or folder))
    return entries


def models_text(settings: Settings) -> str:
    """One line per diffusion model: its name and what it is good at."""
    return "\n".join(f"• {m.name}: {m.description}" for m in parse_models(settings).values())


def dfgan_models_text(settings: Settings) -> str:
    """One line per DF-GAN model: its name and what it is good at."""
    return "\n".join(f"• {m.name}: {m.description}" for m in parse_dfgan_models(settings).values())


def catalogue_text(settings: Settings) -> str:
    """Every model ``--model`` may name (for ``/models`` and refusals): the diffusion models first,
    as before DF-GAN models could be named, then the DF-GAN models under their own heading."""
    return f"{models_text(settings)}\nDF-GAN models:\n{dfgan_models_text(settings)}"


def _spelled(names: list[str], wanted: str) -> str | None:
    """The spelling in ``names`` of ``wanted`` (any case), or None."""
    return next((known for known in names if known.lower() == wanted.lower()), None)


def _unknown(settings: Settings, name: str) -> InputError:
    listing = catalogue_text(settings)
    return InputError("unknown_model", f"There is no model called '{name.strip()[:40]}'. Models:\n{listing}")


def _checked(names: list[str], settings: Settings, name: str | None) -> str:
    """The spelling in ``names`` of model ``name`` (any case; None or blank: the default).

    Raises:
        InputError: ``unknown_model``, with every model ``--model`` may name.
    """
    if name is None or not name.strip():
        return DEFAULT_MODEL
    known = _spelled(names, name.strip())
    if known is None:
        raise _unknown(settings, name)
    return known


def check_model(settings: Settings, name: str | None) -> str:
    """The diffusion catalogue's spelling of model ``name`` (any case; None: the default).

    Raises:
        InputError: ``unknown_model``, with the list of models.
    """
    return _checked(list(parse_models(settings)), settings, name)


def check_dfgan_model(settings: Settings, name: str | None) -> str:
    """The DF-GAN catalogue's spelling of model ``name`` (any case; None: the default).

    Raises:
        InputError: ``unknown_model``, with the list of models.
    """
    return _checked(list(parse_dfgan_models(settings)), settings, name)


def engine_model(request: JobRequest, engine: str) -> str | None:
    """The model engine ``engine`` draws ``request`` with (None: its default; engines other than
    diffusion and DF-GAN have none)."""
    if engine == "diffusion":
        return request.model
    if engine == "dfgan":
        return request.dfgan_model
    return None


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
            ``model_without_diffusion`` / ``model_without_dfgan`` (a model or LoRA for a job the
            engine it belongs to does not draw).
    """
    if request.image_key is None and request.strength is not None:
        raise InputError(
            "strength_without_image", "--strength needs a picture to start from: attach an image."
        )
    if request.image_key is not None and not is_upload_key(request.image_key):
        raise InputError("image_expired", "The image this job starts from has expired; send it again.")
    engines = request.engines or settings.default_engines
    if request.dfgan_auto:  # chosen for the words of the prompt, which may have changed (a remix)
        request = request.model_copy(update={"dfgan_model": None, "dfgan_auto": False})
    auto = auto_dfgan_model(settings, request, engines)
    auto = _spelled(list(parse_dfgan_models(settings)), auto) if auto is not None else None
    if auto is not None:  # (a name missing from the catalogue is the operator's slip: not the user's)
        request = request.model_copy(update={"dfgan_model": auto, "dfgan_auto": True})
    model, dfgan_model = _engine_models(settings, request, engines)
    loras = check_loras(settings, request.loras)
    if loras and "diffusion" not in engines:
        raise InputError(
            "model_without_diffusion",
            "--model and --lora choose how the diffusion engine draws; it is not in this job.",
        )
    update = {
        # one spelling of "the default" in batch keys and queue routes
        "model": None if model == DEFAULT_MODEL else model,
        "dfgan_model": None if dfgan_model == DEFAULT_MODEL else dfgan_model,
        "loras": loras,
        "strength": None if request.image_key is None else check_strength(request.strength),
    }
    return request.model_copy(update=update)


def _engine_models(settings: Settings, request: JobRequest, engines: list[str]) -> tuple[str, str]:
    """(diffusion model, DF-GAN model) for ``request``: its ``--model`` (``request.model``) names a
    model of either catalogue or both; each engine of the job that has a model of that name draws
    with it, the other with its default. A DF-GAN model already chosen (``request.dfgan_model``, a
    stored request checked again) is kept while the job has the DF-GAN engine.

    Raises:
        InputError: ``unknown_model`` (in neither catalogue), ``model_without_diffusion`` or
            ``model_without_dfgan`` (no engine of the job has a model of that name).
    """
    # Dropped when the job has no DF-GAN (a variation of the diffusion picture): it would split batches.
    dfgan_model = check_dfgan_model(settings, request.dfgan_model) if "dfgan" in engines else DEFAULT_MODEL
    name = (request.model or "").strip()
    if not name or name.lower() == DEFAULT_MODEL:
        return DEFAULT_MODEL, dfgan_model
    diffusion = _spelled(list(parse_models(settings)), name)
    dfgan = _spelled(list(parse_dfgan_models(settings)), name)
    if diffusion is None and dfgan is None:
        raise _unknown(settings, name)
    for_diffusion = diffusion if "diffusion" in engines else None
    for_dfgan = dfgan if "dfgan" in engines else None
    if for_diffusion is None and for_dfgan is None:
        if diffusion is not None:
            raise InputError(
                "model_without_diffusion",
                "--model and --lora choose how the diffusion engine draws; it is not in this job.",
            )
        raise InputError(
            "model_without_dfgan",
            f"'{dfgan}' is a DF-GAN model and the DF-GAN engine is not in this job (add --engine dfgan).",
        )
    return for_diffusion or DEFAULT_MODEL, for_dfgan or dfgan_model
