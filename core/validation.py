"""Rules a job must meet before it is queued, each with its own message."""

from __future__ import annotations

import re

from core.errors import InputError
from core.jobs import Conversation, JobRequest
from core.preferences import Preferences
from core.prompt import ParsedPrompt, check_text, parse_prompt
from core.settings import KNOWN_ENGINES, Settings

MAX_SEED = 2**32 - 1
MAX_NEGATIVE_CHARS = 300


def validate_request(request: JobRequest, settings: Settings) -> JobRequest:
    """Check every rule; return the request with defaults filled in, or raise :class:`InputError`."""
    check_text(request.prompt)
    check_text(request.negative_prompt or "")
    prompt = request.prompt.strip()
    if not prompt:
        raise InputError(
            "empty_prompt", "Your prompt is empty. Describe a picture, e.g. /imagine a red bird on a branch"
        )
    if len(prompt) > settings.max_prompt_chars:
        raise InputError(
            "prompt_too_long",
            f"Your prompt has {len(prompt)} characters; the limit is {settings.max_prompt_chars}.",
        )
    _check_blocklist(prompt, request.negative_prompt, settings)
    engines = request.engines or settings.default_engines
    for engine in engines:
        if engine not in settings.enabled_engines:
            what = "is not enabled here" if engine in KNOWN_ENGINES else "is not an engine"
            raise InputError(
                "unknown_engine",
                f"'{engine[:30]}' {what}. Enabled engines: {', '.join(settings.enabled_engines)}.",
            )
    engines = list(dict.fromkeys(engines))  # keep order, drop repeats
    if request.seed is not None and not 0 <= request.seed <= MAX_SEED:
        raise InputError("seed_out_of_range", f"--seed must be between 0 and {MAX_SEED}.")
    steps = request.steps if request.steps is not None else settings.default_steps
    if not settings.min_steps <= steps <= settings.max_steps:
        raise InputError(
            "steps_out_of_range", f"--steps must be between {settings.min_steps} and {settings.max_steps}."
        )
    if not 1 <= request.count <= settings.max_count:
        raise InputError("count_out_of_range", f"--n must be between 1 and {settings.max_count}.")
    size = request.size if request.size is not None else settings.default_size
    if size not in settings.sizes:
        raise InputError(
            "size_out_of_range", f"--size must be one of {', '.join(str(s) for s in settings.sizes)}."
        )
    negative = (request.negative_prompt or "").strip() or None
    if negative is not None and len(negative) > MAX_NEGATIVE_CHARS:
        raise InputError(
            "negative_too_long",
            f"--no text has {len(negative)} characters; the limit is {MAX_NEGATIVE_CHARS}.",
        )
    return request.model_copy(
        update={
            "prompt": prompt,
            "engines": engines,
            "steps": steps,
            "size": size,
            "negative_prompt": negative,
        }
    )


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
    parsed: ParsedPrompt = parse_prompt(text)
    prefs = defaults or Preferences()
    request = JobRequest(
        prompt=parsed.prompt,
        engines=parsed.engines or prefs.engines or [],
        seed=parsed.seed,
        count=parsed.count if parsed.count is not None else (prefs.count or 1),
        steps=parsed.steps if parsed.steps is not None else prefs.steps,
        size=parsed.size if parsed.size is not None else prefs.size,
        negative_prompt=parsed.negative_prompt,
        user=user,
        conversation=conversation,
    )
    return validate_request(request, settings)
