"""The ``minilm-slots`` condition: MiniLM of the canonical caption plus who-is-where slots.

A pooled MiniLM sentence vector barely tells "a red circle above a blue square" from "a blue circle
above a red square" (cosine ~0.99): it says which colours, shapes and axis a scene has, not which
object gets which. This encoder keeps MiniLM (so prompts outside the scenes grammar still mean
something, and a model warm-started from a MiniLM one starts where that one was) and appends a small
exact code of the scene: for each of the five anchor positions (the one-object positions; a pair
"A above B" puts A at the top and B at the bottom, "A left of B" A on the left and B on the right),
the colour, shape and size of the object standing there. The vector is
``[MiniLM(canonical caption) (384, unit norm); slots (55, unit norm, or zero outside the grammar)]``.

Captions the scenes grammar reads (:func:`training.data.scenes.parse_scene_caption`) are first
rewritten to one canonical phrasing, so every way of saying the same picture gives the same vector;
anything else is embedded as typed, with empty slots.
"""

from __future__ import annotations

import torch

from training.data.scenes import SceneObject, SceneSpec, parse_scene_caption
from training.data.shapes import COLOURS, POSITIONS, SHAPES, SIZES
from training.text.encoders import MINILM_DIM, TextEncoder

#: Anchor positions, in slot order.
SLOT_POSITIONS: tuple[str, ...] = tuple(POSITIONS)
_COLOURS = tuple(COLOURS)
#: Features of one slot: colour one-hot, shape one-hot, size one-hot (all zero when unsaid).
SLOT_WIDTH = len(_COLOURS) + len(SHAPES) + len(SIZES)
SLOTS_DIM = len(SLOT_POSITIONS) * SLOT_WIDTH
#: Which way round a pair is put in canonical form: the first object is the upper / left one.
_CANONICAL = {"below": "above", "to the right of": "to the left of"}
#: Where the first and second object of a canonical pair stand.
_PAIR_PLACES = {"above": ("at the top", "at the bottom"), "to the left of": ("on the left", "on the right")}


def canonical_scene(spec: SceneSpec) -> SceneSpec:
    """``spec`` with a pair's relation turned to "above" / "to the left of" (objects swapped)."""
    if not spec.is_pair or spec.relation not in _CANONICAL:
        return spec
    first, second = spec.objects
    return SceneSpec((second, first), relation=_CANONICAL[spec.relation])


def placed_objects(spec: SceneSpec) -> list[tuple[str, SceneObject]]:
    """``(anchor position, object)`` for each object of ``spec``."""
    spec = canonical_scene(spec)
    if not spec.is_pair:
        return [(spec.position or "", spec.objects[0])]
    return list(zip(_PAIR_PLACES[spec.relation or ""], spec.objects, strict=True))


def slot_vector(spec: SceneSpec) -> torch.Tensor:
    """The ``[SLOTS_DIM]`` unit-norm who-is-where code of ``spec``."""
    slots = torch.zeros(len(SLOT_POSITIONS), SLOT_WIDTH)
    for position, obj in placed_objects(spec):
        row = slots[SLOT_POSITIONS.index(position)]
        row[_COLOURS.index(obj.colour)] = 1.0
        row[len(_COLOURS) + SHAPES.index(obj.shape)] = 1.0
        if obj.size is not None:
            row[len(_COLOURS) + len(SHAPES) + SIZES.index(obj.size)] = 1.0
    return torch.nn.functional.normalize(slots.flatten(), dim=0)


def read_scene(text: str) -> SceneSpec | None:
    """The scene ``text`` asks for, or ``None`` when the scenes grammar cannot read it."""
    try:
        return parse_scene_caption(text)
    except ValueError:
        return None


def canonical_caption(text: str) -> str:
    """The one phrasing of an in-grammar caption ("a small red circle above a large blue square",
    "a large red circle in the center"); other text unchanged."""
    spec = read_scene(text)
    return text if spec is None else canonical_scene(spec).caption(0)


class SceneSlotsEncoder:
    """``minilm-slots``: MiniLM of the canonical caption, then the scene's slot code (see module doc)."""

    name = "minilm-slots"
    dim = MINILM_DIM + SLOTS_DIM

    def __init__(self, base: TextEncoder) -> None:
        self.base = base
        self.device = getattr(base, "device", "cpu")

    def encode(self, texts: list[str]) -> torch.Tensor:
        """Embed ``texts`` into ``[len(texts), 439]``: MiniLM part then slots (zero outside the grammar)."""
        specs = [read_scene(t) for t in texts]
        words = [t if s is None else canonical_scene(s).caption(0) for t, s in zip(texts, specs, strict=True)]
        sentence = self.base.encode(words)
        slots = (
            torch.stack([torch.zeros(SLOTS_DIM) if s is None else slot_vector(s) for s in specs])
            if texts
            else torch.zeros(0, SLOTS_DIM)
        )
        return torch.cat([sentence, slots.to(sentence.device)], dim=1)
