"""Rules a job must meet before it is queued, each with its own message."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass

from core.aspect import normalize_aspect
from core.errors import InputError
from core.jobs import Conversation, JobRequest
from core.model_catalog import check_choices
from core.preferences import Preferences
from core.prompt import ParsedPrompt, check_text, parse_prompt
from core.settings import KNOWN_ENGINES, Settings

MAX_SEED = 2**32 - 1
MAX_NEGATIVE_CHARS = 300


@dataclass(frozen=True)
class CheckedOptions:
    """Drawing options that passed every rule, with the server's defaults filled in."""

    engines: list[str]
    seed: int | None
    steps: int
    count: int
    size: int
    negative_prompt: str | None
    #: ``W:H`` in lowest terms, None for square (core.aspect).
    aspect: str | None = None


def validate_options(
    settings: Settings,
    *,
    engines: list[str] | None = None,
    seed: int | None = None,
    steps: int | None = None,
    count: int = 1,
    size: int | None = None,
    negative_prompt: str | None = None,
    aspect: str | None = None,
) -> CheckedOptions:
    """Check the options of a job (or of a user's defaults), each rule with its own message.

    None (and an empty engine list) means "the server's default". Raises :class:`InputError`.
    """
    check_text(negative_prompt or "")
    chosen = engines or settings.default_engines
    for engine in chosen:
        if engine not in settings.enabled_engines:
            what = "is not enabled here" if engine in KNOWN_ENGINES else "is not an engine"
            raise InputError(
                "unknown_engine",
                f"'{engine[:30]}' {what}. Enabled engines: {', '.join(settings.enabled_engines)}.",
            )
    if seed is not None and not 0 <= seed <= MAX_SEED:
        raise InputError("seed_out_of_range", f"--seed must be between 0 and {MAX_SEED}.")
    steps = steps if steps is not None else settings.default_steps
    if not settings.min_steps <= steps <= settings.max_steps:
        raise InputError(
            "steps_out_of_range", f"--steps must be between {settings.min_steps} and {settings.max_steps}."
        )
    if not 1 <= count <= settings.max_count:
        raise InputError("count_out_of_range", f"--n must be between 1 and {settings.max_count}.")
    size = size if size is not None else settings.default_size
    if size not in settings.sizes:
        raise InputError(
            "size_out_of_range", f"--size must be one of {', '.join(str(s) for s in settings.sizes)}."
        )
    negative = (negative_prompt or "").strip() or None
    if negative is not None and len(negative) > MAX_NEGATIVE_CHARS:
        raise InputError(
            "negative_too_long",
            f"--no text has {len(negative)} characters; the limit is {MAX_NEGATIVE_CHARS}.",
        )
    unique = list(dict.fromkeys(chosen))  # keep order, drop repeats
    return CheckedOptions(unique, seed, steps, count, size, negative, normalize_aspect(aspect))


def validate_prompt(prompt: str, negative_prompt: str | None, settings: Settings) -> str:
    """The prompt, stripped, when it is valid text, not empty, within the limit and not blocked."""
    check_text(prompt)
    prompt = prompt.strip()
    if not prompt:
        raise InputError(
            "empty_prompt", "Your prompt is empty. Describe a picture, e.g. /imagine a red bird on a branch"
        )
    if len(prompt) > settings.max_prompt_chars:
        raise InputError(
            "prompt_too_long",
            f"Your prompt has {len(prompt)} characters; the limit is {settings.max_prompt_chars}.",
        )
    _check_blocklist(prompt, negative_prompt, settings)
    return prompt


def validate_request(request: JobRequest, settings: Settings) -> JobRequest:
    """Check every rule; return the request with defaults filled in, or raise :class:`InputError`."""
    check_text(request.negative_prompt or "")
    prompt = validate_prompt(request.prompt, request.negative_prompt, settings)
    options = validate_options(
        settings,
        engines=request.engines,
        seed=request.seed,
        steps=request.steps,
        count=request.count,
        size=request.size,
        negative_prompt=request.negative_prompt,
        aspect=request.aspect,
    )
    checked = request.model_copy(update={"prompt": prompt, **asdict(options)})
    return check_choices(settings, checked)  # model, LoRAs, image-to-image (core.model_catalog)


def _check_blocklist(prompt: str, negative: str | None, settings: Settings) -> None:
    """Refuse prompts containing a blocked word or phrase (whole words, any case)."""
    terms = settings.blocked_terms
    if not terms:
        return
    words = " " + " ".join(re.findall(r"[\w']+", prompt.lower())) + " "
    for term in terms:
        if " " + " ".join(re.findall(r"[\w']+", term)) + " " in words:
            raise InputError(
                "blocked_prompt",
                "Your prompt contains a word this server does not allow. Please rephrase it.",
            )


def build_request(
    asked: ParsedPrompt, user: str, conversation: Conversation, defaults: Preferences | None = None
) -> JobRequest:
    """The (not yet validated) request for what a user ``asked``; their ``defaults`` (``/settings``)
    fill what they did not say."""
    prefs = defaults or Preferences()
    return JobRequest(
        prompt=asked.prompt,
        engines=asked.engines or prefs.engines or [],
        seed=asked.seed,
        count=asked.count if asked.count is not None else (prefs.count or 1),
        steps=asked.steps if asked.steps is not None else prefs.steps,
        size=asked.size if asked.size is not None else prefs.size,
        aspect=asked.aspect if asked.aspect is not None else prefs.aspect,
        negative_prompt=asked.negative_prompt,
        image_key=getattr(asked, "image_key", None),  # an Imagine action's upload (core.uploads)
        strength=asked.strength,
        model=asked.model,
        loras=list(asked.loras),
        user=user,
        conversation=conversation,
    )


def request_from_text(
    text: str,
    settings: Settings,
    user: str,
    conversation: Conversation,
    defaults: Preferences | None = None,
) -> JobRequest:
    """Parse chat text (``/imagine ...`` or a bare prompt) and validate it.

    ``defaults`` (the user's ``/settings``) fill what the text does not say.
    """
    return validate_request(build_request(parse_prompt(text), user, conversation, defaults), settings)
