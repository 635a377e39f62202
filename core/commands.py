"""The admin commands every front-end shares: who is an admin, and ``/retrain`` (start and cancel).

Each rule is written once here, with its message: :func:`check_retrain` for a structured request
(a Discord slash command, the CLI, :class:`core.training_client.TrainingClient`), :func:`read_retrain`
for chat text. Dataset names are looked up in the configured list and never used as paths.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

from core.datasets import DatasetStore
from core.errors import InputError
from core.ids import is_run_id
from core.settings import Settings

# One whole word at a time (a full match per word): linear in the text, unlike a findall scan.
_OPTION = re.compile(r"(\w+)[:=](\S+)")
MAX_EPOCHS = 1000
DEFAULT_EPOCHS = 10
#: The models admins can retrain (the hosted hf-api engine and hub pipelines are not ours to train).
RETRAINABLE = ("dfgan", "diffusion")
#: How each retrainable model is named in chat.
MODEL_TITLES = {"dfgan": "DF-GAN", "diffusion": "diffusion"}

#: What a non-admin is told, per admin command.
NOT_ADMIN_RETRAIN = "Only admins can retrain the model."
NOT_ADMIN_RETRAIN_CANCEL = "Only admins can cancel training runs."
NOT_ADMIN_MODEL = "Only admins can see and change the model."
BAD_RUN_ID_TEXT = "Usage: /retrain cancel [run id], where a run id is 16 hex digits, e.g. 0123456789abcdef."


@dataclass
class RetrainRequest:
    """An admin's request to retrain a model (DF-GAN or our diffusion model) on a named dataset."""

    dataset: str
    epochs: int = DEFAULT_EPOCHS
    #: False (the default): fine-tune the promoted version (or the shipped model); True: random weights.
    from_scratch: bool = False
    #: Which model: ``dfgan`` (the default) or ``diffusion``.
    model: str = "dfgan"


def is_admin(settings: Settings, user: str) -> bool:
    """Whether ``user`` (``platform:id``) may run admin commands: a listed admin, or the local CLI
    operator (who already holds the Redis URL and so the whole deployment)."""
    platform, _, user_id = user.partition(":")
    return platform == "cli" or settings.is_admin(platform, user_id)


def require_admin(settings: Settings, user: str, refusal: str) -> None:
    """Raise :class:`InputError` ``not_admin`` with ``refusal`` unless ``user`` is an admin."""
    if not is_admin(settings, user):
        raise InputError("not_admin", refusal)


def check_dataset(name: str, settings: Settings) -> str:
    """The dataset ``name`` (lower case) when it is a configured one or one admins made in chat."""
    dataset = name.strip().lower()
    known = settings.dataset_names + DatasetStore(settings.data_dir).names()
    if dataset not in known:
        shown = f"'{dataset[:30]}'" if dataset else "(none given)"
        raise InputError("unknown_dataset", f"Unknown dataset {shown}. Known datasets: {', '.join(known)}.")
    return dataset


def check_epochs(epochs: int) -> int:
    """``epochs`` when it is in range."""
    if not 1 <= epochs <= MAX_EPOCHS:
        raise InputError("epochs_out_of_range", f"epochs must be between 1 and {MAX_EPOCHS}.")
    return epochs


def check_model(name: str) -> str:
    """The retrainable model ``name`` (lower case, spaces removed)."""
    model = "".join(name.split()).lower()
    if model not in RETRAINABLE:
        raise InputError("unknown_model", f"model: must be one of {', '.join(RETRAINABLE)} (default dfgan).")
    return model


def check_retrain(request: RetrainRequest, settings: Settings) -> RetrainRequest:
    """``request`` with its names normalised, or :class:`InputError` for the first rule it breaks."""
    return replace(
        request,
        dataset=check_dataset(request.dataset, settings),
        epochs=check_epochs(request.epochs),
        model=check_model(request.model),
    )


def read_retrain(text: str, settings: Settings) -> RetrainRequest:
    """Read ``[/retrain] dataset:<name> epochs:<n> [from:scratch|current] [model:dfgan|diffusion]``
    and check it (the admin check is the caller's: it comes before any of these answers)."""
    options = _options(" ".join(_retrain_words(text)))
    dataset = check_dataset(options.get("dataset", ""), settings)
    try:
        epochs = int(options.get("epochs", str(DEFAULT_EPOCHS)))
    except ValueError:
        raise InputError("not_a_number", "epochs must be a whole number, e.g. epochs:10.") from None
    check_epochs(epochs)
    start = options.get("from", "current").lower()
    if start not in ("current", "scratch"):
        raise InputError(
            "bad_start",
            "from: must be scratch (a new model from random weights) or current (the default: "
            "fine-tune the model in use).",
        )
    return RetrainRequest(
        dataset=dataset,
        epochs=epochs,
        from_scratch=start == "scratch",
        model=check_model(options.get("model", "dfgan")),
    )


def parse_retrain(text: str, settings: Settings, platform: str, user_id: str) -> RetrainRequest:
    """Check ``/retrain dataset:<name> epochs:<n>``: admins only, known dataset names only."""
    require_admin(settings, f"{platform}:{user_id}", NOT_ADMIN_RETRAIN)
    return read_retrain(text, settings)


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


def check_run_id(value: str | None) -> str | None:
    """A run id as typed (any case, spaces around it), or None for "my latest unfinished run".
    The id becomes a Redis key part, never a path: anything but 16 hex digits is refused."""
    if value is None or not value.strip():
        return None
    run_id = value.strip().lower()
    if not is_run_id(run_id):
        raise InputError("bad_run_id", BAD_RUN_ID_TEXT)
    return run_id


def read_retrain_cancel(text: str) -> str | None:
    """The run id of ``[/retrain] cancel [<run_id>]`` (None: the latest unfinished run)."""
    words = _retrain_words(text)[1:]
    if len(words) > 1:
        raise InputError("bad_run_id", BAD_RUN_ID_TEXT)
    return check_run_id(words[0] if words else None)


def parse_retrain_cancel(text: str, settings: Settings, platform: str, user_id: str) -> str | None:
    """Check ``/retrain cancel [<run_id>]``: admins only. Returns the run id, or None for "my latest
    unfinished run"."""
    require_admin(settings, f"{platform}:{user_id}", NOT_ADMIN_RETRAIN_CANCEL)
    return read_retrain_cancel(text)
