"""Can the shipped shapes model draw a prompt, or should the emoji model have it?

The shipped default DF-GAN was trained on the ``shapes`` and ``scenes`` captions only: six colours,
three shapes, two sizes, five positions and four relations ("a small red circle above a large blue
square"). Given any other word ("a red apple", "a smiling cat") it still draws a shape. The shipped
emoji model follows everyday words far better (R-precision on held-out emoji captions 0.059, the
shapes model 0.000, chance 0.010: ``docs/models.md``), so a prompt with a word outside the shapes
vocabulary goes to the emoji model when the user named no model.

Telling them apart is exact, not a guess: a prompt is a shapes prompt when every word in it is one
of the words the shapes captions are made of (:data:`VOCABULARY`). Every caption of the scenes answer
key passes; anything with one other word does not (measured in ``docs/models.md``). The words are the
training data's (``training/data/shapes.py``, ``scenes.py``; a test keeps the lists equal), kept here
because ``core`` imports no torch.
"""

from __future__ import annotations

import re

import redis

from core.jobs import JobRequest
from core.model_versions import ModelRegistry
from core.settings import Settings

COLOUR_WORDS = ("red", "green", "blue", "yellow", "purple", "orange")
SHAPE_WORDS = ("circle", "square", "triangle")
SIZE_WORDS = ("small", "large")
POSITION_PHRASES = ("on the left", "on the right", "at the top", "at the bottom", "in the center")
#: Every way a scenes caption may say a relation ("under" and "left of" read as "below", "to the left of").
RELATION_PHRASES = ("above", "below", "under", "to the left of", "left of", "to the right of", "right of")
#: Words the captions put around those: "a", "there is a …".
FILLER_WORDS = ("a", "an", "there", "is", "are")

_PHRASES = (*COLOUR_WORDS, *SHAPE_WORDS, *SIZE_WORDS, *POSITION_PHRASES, *RELATION_PHRASES, *FILLER_WORDS)
VOCABULARY = frozenset(word for phrase in _PHRASES for word in phrase.split())

_WORD = re.compile(r"[a-z]+")
#: Datasets whose captions are made of :data:`VOCABULARY` only.
SHAPES_DATASETS = frozenset({"shapes", "scenes"})


def words_outside(prompt: str) -> list[str]:
    """The words of ``prompt`` (letters only, any case) that no shapes caption uses, in order."""
    return [word for word in _WORD.findall(prompt.lower()) if word not in VOCABULARY]


def is_shapes_prompt(prompt: str) -> bool:
    """True when the shipped shapes model knows every word of ``prompt``."""
    return not words_outside(prompt)


def auto_dfgan_model(settings: Settings, request: JobRequest, engines: list[str]) -> str | None:
    """The DF-GAN model to draw ``request`` with when its user named none: ``IMAGINEBOT_AUTO_DFGAN_MODEL``
    (the shipped ``emoji`` model by default) for a prompt outside the shapes vocabulary, else None (the
    default DF-GAN). Only while the default DF-GAN is the shipped shapes model: an operator's own
    checkpoint (``IMAGINEBOT_DFGAN_CHECKPOINT``) knows other words, so then every prompt stays with it."""
    chosen = settings.auto_dfgan_model.strip()
    if not chosen or settings.dfgan_checkpoint or "dfgan" not in engines:
        return None
    if request.model or request.dfgan_model:
        return None
    return chosen if not is_shapes_prompt(request.prompt) else None


def default_knows_only_shapes(settings: Settings, client: redis.Redis) -> bool:
    """False when the promoted DF-GAN version was retrained on another dataset (a community one made
    in chat, say): it knows its own words, so automatic routing stands aside for it. True when none
    is promoted (the shipped shapes model draws) or the promoted one was trained on shapes or scenes."""
    entry = ModelRegistry(settings, client, "dfgan").promoted_entry()
    return entry is None or entry.dataset in SHAPES_DATASETS


def settle_auto_choice(settings: Settings, client: redis.Redis, request: JobRequest) -> JobRequest:
    """``request`` as submitted: an automatic DF-GAN model choice is dropped (back to the default) when
    the default is no longer the shapes model (:func:`default_knows_only_shapes`). Reads Redis (the
    promoted name, then its entry if there is one) only for requests that were routed automatically."""
    if not request.dfgan_auto or default_knows_only_shapes(settings, client):
        return request
    return request.model_copy(update={"dfgan_model": None, "dfgan_auto": False})
