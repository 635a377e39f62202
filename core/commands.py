"""Chat commands other than ``/imagine`` that every front-end shares."""

from __future__ import annotations

import re
from dataclasses import dataclass

from core.errors import InputError
from core.settings import Settings

_OPTION = re.compile(r"(\w+)[:=](\S+)")
MAX_EPOCHS = 1000


@dataclass
class RetrainRequest:
    """An admin's request to retrain DF-GAN on a named dataset."""

    dataset: str
    epochs: int


def parse_retrain(text: str, settings: Settings, platform: str, user_id: str) -> RetrainRequest:
    """Check ``/retrain dataset:<name> epochs:<n>``: admins only, known dataset names only.

    Dataset names are looked up in the configured list and never used as paths.
    """
    if not settings.is_admin(platform, user_id):
        raise InputError("not_admin", "Only admins can retrain the model.")
    body = text.strip()
    if body.lower().startswith("/retrain"):
        body = body[len("/retrain") :]
    options = dict(_OPTION.findall(body))
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
    return RetrainRequest(dataset=dataset, epochs=epochs)
