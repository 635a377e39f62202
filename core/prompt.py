"""Turn what a person typed into a :class:`JobRequest`, with a specific message for every mistake.

Syntax: ``[/imagine] <prompt words> [--seed N] [--engine a,b] [--steps N] [--n N] [--size N] [--ar W:H]
[--no "text"] [--strength 0.0-1.0] [--model NAME] [--lora NAME[:WEIGHT]]...``. Flags may also be written
``--flag=value``; ``--lora`` may be given several times, every other flag once. Quotes group words for
``--no``; apostrophes inside a prompt ("a bird's nest") are ordinary characters. The model and LoRA
names are checked against the operator's catalogue later (:func:`core.model_catalog.check_choices`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from core.errors import InputError
from core.jobs import LoraChoice
from core.model_catalog import parse_lora

#: Flag name -> (field name, kind). Aliases point to the same field.
FLAGS: dict[str, tuple[str, str]] = {
    "seed": ("seed", "int"),
    "engine": ("engines", "list"),
    "engines": ("engines", "list"),
    "steps": ("steps", "int"),
    "n": ("count", "int"),
    "count": ("count", "int"),
    "size": ("size", "int"),
    "ar": ("aspect", "text"),
    "aspect": ("aspect", "text"),
    "no": ("negative_prompt", "text"),
    "negative": ("negative_prompt", "text"),
    "strength": ("strength", "float"),
    "model": ("model", "text"),
    "lora": ("loras", "lora"),
}
#: Flags that may be given more than once (each adds one value).
REPEATABLE = {"loras"}
FLAG_HELP = (
    '--seed N, --engine dfgan,diffusion, --steps N, --n N, --size N, --ar W:H (e.g. 16:9), --no "text", '
    "--strength 0.0-1.0 (with a picture), --model NAME, --lora NAME[:WEIGHT]"
)

_TOKEN = re.compile(r'"[^"]*"|\S+')
# `/imagine`, optionally addressed to a bot as Telegram does in groups (`/imagine@some_bot`).
_COMMAND = re.compile(r"/imagine(?:@[A-Za-z0-9_]*)?", re.IGNORECASE)


@dataclass
class ParsedPrompt:
    """The prompt text and the flag values a person gave (None where not given)."""

    prompt: str
    seed: int | None = None
    engines: list[str] = field(default_factory=list)
    steps: int | None = None
    count: int | None = None
    size: int | None = None
    #: ``--ar W:H`` as typed; checked with the other options (core.aspect).
    aspect: str | None = None
    negative_prompt: str | None = None
    strength: float | None = None
    model: str | None = None
    loras: list[LoraChoice] = field(default_factory=list)


def _unquote(token: str) -> str:
    if len(token) >= 2 and token[0] == token[-1] == '"':
        return token[1:-1]
    return token


def parse_prompt(text: str) -> ParsedPrompt:
    """Split ``text`` into prompt words and flags. Raises :class:`InputError` on a malformed flag."""
    check_text(text)
    text = text.strip()
    command = _COMMAND.match(text)
    if command is not None:
        text = text[command.end() :]
    tokens = _TOKEN.findall(text)
    words: list[str] = []
    parsed = ParsedPrompt(prompt="")
    seen: set[str] = set()
    i = 0
    while i < len(tokens):
        token = tokens[i]
        i += 1
        if not token.startswith("--") or token == "--":
            words.append(token)
            continue
        name, _, inline = token[2:].partition("=")
        name = name.lower()
        if name not in FLAGS:
            raise InputError("unknown_flag", f"Unknown option --{name}. Options are: {FLAG_HELP}.")
        attr, kind = FLAGS[name]
        if attr in seen and attr not in REPEATABLE:
            raise InputError("duplicate_flag", f"Option --{name} is given twice; give it once.")
        seen.add(attr)
        if inline:
            value = inline
        elif i < len(tokens) and not tokens[i].startswith("--"):
            value = tokens[i]
            i += 1
        else:
            raise InputError("missing_value", f"Option --{name} needs a value, e.g. {_example(name)}.")
        _set_flag(parsed, name, attr, kind, _unquote(value))
    parsed.prompt = " ".join(_unquote(w) if w.startswith('"') else w for w in words).strip()
    return parsed


def _set_flag(parsed: ParsedPrompt, name: str, attr: str, kind: str, value: str) -> None:
    """Store one flag's ``value`` in ``parsed`` as its ``kind`` says. Raises :class:`InputError`."""
    if kind == "int":
        try:
            setattr(parsed, attr, int(value))
        except ValueError:
            raise InputError(
                "not_a_number", f"--{name} must be a whole number, not '{value[:20]}'."
            ) from None
    elif kind == "float":
        try:
            setattr(parsed, attr, float(value))
        except ValueError:
            raise InputError("not_a_number", f"--{name} must be a number, not '{value[:20]}'.") from None
    elif kind == "list":
        parsed.engines = split_engines(value)
    elif kind == "lora":
        parsed.loras.append(parse_lora(value))
    else:
        setattr(parsed, attr, value.strip())


def split_engines(value: str) -> list[str]:
    """Engine names from ``dfgan,diffusion`` (any case, spaces around names ignored)."""
    return [e.strip().lower() for e in value.split(",") if e.strip()]


def check_text(text: str) -> None:
    """Refuse text that is not valid Unicode (a lone UTF-16 surrogate cannot be stored or sent on)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise InputError(
            "bad_text", "Your message contains characters that are not valid text; please retype it."
        ) from None


def _example(name: str) -> str:
    return {
        "seed": "--seed 42",
        "engine": "--engine dfgan,diffusion",
        "engines": "--engine dfgan",
        "steps": "--steps 20",
        "n": "--n 2",
        "count": "--n 2",
        "size": "--size 64",
        "ar": "--ar 16:9",
        "aspect": "--aspect 16:9",
        "no": '--no "blurry"',
        "negative": '--no "blurry"',
        "strength": "--strength 0.6",
        "model": "--model default",
        "lora": "--lora NAME:0.8",
    }[name]
