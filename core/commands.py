"""Chat commands other than ``/imagine`` that every front-end shares."""

from __future__ import annotations

import re
from dataclasses import dataclass

from core.errors import InputError
from core.ids import is_run_id
from core.settings import Settings

# One whole word at a time (a full match per word): linear in the text, unlike a findall scan.
_OPTION = re.compile(r"(\w+)[:=](\S+)")
MAX_EPOCHS = 1000
#: The models admins can retrain (the hosted hf-api engine and hub pipelines are not ours to train).
RETRAINABLE = ("dfgan", "diffusion")
#: How each retrainable model is named in chat.
MODEL_TITLES = {"dfgan": "DF-GAN", "diffusion": "diffusion"}


@dataclass
class RetrainRequest:
    """An admin's request to retrain a model (DF-GAN or our diffusion model) on a named dataset."""

    dataset: str
    epochs: int
    #: False (the default): fine-tune the promoted version (or the shipped model); True: random weights.
    from_scratch: bool = False
    #: Which model: ``dfgan`` (the default) or ``diffusion``.
    model: str = "dfgan"


def parse_retrain(text: str, settings: Settings, platform: str, user_id: str) -> RetrainRequest:
    """Check ``/retrain dataset:<name> epochs:<n>``: admins only, known dataset names only.

    Dataset names are looked up in the configured list and never used as paths.
    """
    if not settings.is_admin(platform, user_id):
        raise InputError("not_admin", "Only admins can retrain the model.")
    body = text.strip()
    if body.lower().startswith("/retrain"):
        body = body[len("/retrain") :]
    options = _options(body)
    dataset = options.get("dataset", "").lower()
    known = settings.dataset_names
    if dataset not in known:
        shown = f"'{dataset[:30]}'" if dataset else "(none given)"
        raise InputError("unknown_dataset", f"Unknown dataset {shown}. Known datasets: {', '.join(known)}.")
    try:
        epochs = int(options.get("epochs", "10"))
    except ValueError:
        raise InputError("not_a_number", "epochs must be a whole number, e.g. epochs:10.") from None
    if not 1 <= epochs <= MAX_EPOCHS:
        raise InputError("epochs_out_of_range", f"epochs must be between 1 and {MAX_EPOCHS}.")
    start = options.get("from", "current").lower()
    if start not in ("current", "scratch"):
        raise InputError(
            "bad_start",
            "from: must be scratch (a new model from random weights) or current (the default: "
            "fine-tune the model in use).",
        )
    model = options.get("model", "dfgan").lower()
    if model not in RETRAINABLE:
        raise InputError("unknown_model", f"model: must be one of {', '.join(RETRAINABLE)} (default dfgan).")
    return RetrainRequest(dataset=dataset, epochs=epochs, from_scratch=start == "scratch", model=model)


def _options(body: str) -> dict[str, str]:
    """``name:value`` / ``name=value`` words of ``body`` (later ones win), in time linear in its length."""
    found = (_OPTION.fullmatch(word) for word in body.split())
    return {m.group(1): m.group(2) for m in found if m is not None}


def _retrain_words(text: str) -> list[str]:
    body = text.strip()
    if body.lower().startswith("/retrain"):
        body = body[len("/retrain") :]
    return body.split()


def is_retrain_cancel(text: str) -> bool:
    """Whether ``text`` is ``/retrain cancel [...]`` (or its body ``cancel [...]``)."""
    words = _retrain_words(text)
    return bool(words) and words[0].lower() == "cancel"


def parse_retrain_cancel(text: str, settings: Settings, platform: str, user_id: str) -> str | None:
    """Check ``/retrain cancel [<run_id>]``: admins only. Returns the run id, or None for "my latest
    unfinished run". The id must look like a run id (it is a Redis key part, never a path)."""
    if not settings.is_admin(platform, user_id):
        raise InputError("not_admin", "Only admins can cancel training runs.")
    words = _retrain_words(text)[1:]
    if not words:
        return None
    run_id = words[0].strip().lower()
    if len(words) > 1 or not is_run_id(run_id):
        raise InputError(
            "bad_run_id",
            "Usage: /retrain cancel [run id], where a run id is 16 hex digits, e.g. 0123456789abcdef.",
        )
    return run_id
