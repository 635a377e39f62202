"""Compositional shapes: scenes of one object, or two objects and the relation between them.

A one-object scene is a ``shapes`` image (colour, shape, size, position); a two-object scene puts
two shapes of different colours next to each other, and its caption names both and how they stand:
``"a small red circle above a large blue square"``, ``"a green triangle left of a yellow square"``.
Captions come in a few phrasings (the relation stated either way round, "there is ...", sizes
sometimes left out). :func:`check_scene` reads any image back by connected components of the
palette colours and says which of the caption's attributes it shows, so text-image agreement on
two-object prompts is measured exactly, without a learned metric. :func:`answer_key` is the fixed
evaluation set (1000 captions by default, seed 12345).
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw
from scipy import ndimage

from training.data.shapes import (
    _SIZE_FRACTION,
    BACKGROUND,
    COLOURS,
    POSITIONS,
    SHAPES,
    SIZES,
    RenderedImages,
    ShapeSpec,
    all_specs,
)

#: Relation phrase -> unit step from the first object to the second, as (dx, dy) in image axes:
#: "A above B" puts B below A.
RELATIONS: dict[str, tuple[int, int]] = {
    "above": (0, 1),
    "below": (0, -1),
    "to the left of": (1, 0),
    "to the right of": (-1, 0),
}
INVERSE = {
    "above": "below",
    "below": "above",
    "to the left of": "to the right of",
    "to the right of": "to the left of",
}
#: Phrasings a caption may use for a relation (all read the same way).
_RELATION_WORDS = {
    "above": "above",
    "below": "below",
    "under": "below",
    "to the left of": "to the left of",
    "left of": "to the left of",
    "to the right of": "to the right of",
    "right of": "to the right of",
}
_RELATION_RE = re.compile(r"\b(above|below|under|(?:to the )?left of|(?:to the )?right of)\b")
#: Where the two objects' centres go (fraction of the side): the same anchors as "on the left" /
#: "on the right" / "at the top" / "at the bottom" of one-object scenes.
_PAIR_OFFSET = 0.25
#: Smaller jitter than one-object scenes: two large shapes 0.5 of the side apart must not overlap.
_PAIR_JITTER = 0.015
_ONE_JITTER = 0.05

SINGLE_ATTRIBUTES = ("colour", "shape", "size", "position")
PAIR_ATTRIBUTES = ("colour", "shape", "size", "relation")


@dataclass(frozen=True)
class SceneObject:
    """One shape in a scene; ``size`` is ``None`` in a caption that does not say it."""

    colour: str
    shape: str
    size: str | None

    def words(self) -> str:
        """``"small red circle"`` (or ``"red circle"`` without a size)."""
        return " ".join(w for w in (self.size, self.colour, self.shape) if w)


@dataclass(frozen=True)
class SceneSpec:
    """What a scene shows: one object at ``position``, or two objects with ``relation`` (the first
    object stands ``relation`` the second)."""

    objects: tuple[SceneObject, ...]
    position: str | None = None
    relation: str | None = None

    @property
    def is_pair(self) -> bool:
        return len(self.objects) == 2

    def caption(self, phrasing: int = 0, sizes: bool = True) -> str:
        """The scene in words. ``phrasing`` 0: plain; 1: a pair said the other way round (one object:
        position first); 2: "there is ...". ``sizes=False`` leaves the sizes out."""
        objs = [o if sizes else SceneObject(o.colour, o.shape, None) for o in self.objects]
        if not self.is_pair:
            (o,) = objs
            if phrasing == 1:
                return f"{self.position}, a {o.words()}"
            prefix = "there is " if phrasing == 2 else ""
            return f"{prefix}a {o.words()} {self.position}"
        a, b = objs
        if phrasing == 1:
            return f"a {b.words()} {INVERSE[self.relation or '']} a {a.words()}"
        prefix = "there is " if phrasing == 2 else ""
        return f"{prefix}a {a.words()} {self.relation} a {b.words()}"

    @classmethod
    def single(cls, spec: ShapeSpec) -> SceneSpec:
        """A one-object scene from a ``shapes`` spec."""
        return cls((SceneObject(spec.colour, spec.shape, spec.size),), position=spec.position)


PHRASINGS = 3


def parse_scene_caption(caption: str) -> SceneSpec:
    """The scene a caption asks for (sizes ``None`` where unnamed). Raises ``ValueError`` when an
    object lacks a colour or shape, or a one-object caption lacks a size or position."""
    text = caption.lower().strip().rstrip(".")
    text = re.sub(r"^there (?:is|are)\s+", "", text)
    match = _RELATION_RE.search(text)
    if match is None:
        obj = _parse_object(text, caption)
        if obj.size is None:
            raise ValueError(f"caption {caption!r} must name exactly one size")
        return SceneSpec((obj,), position=_find(text, list(POSITIONS), "position", caption))
    relation = _RELATION_WORDS[match.group(1)]
    first = _parse_object(text[: match.start()], caption)
    second = _parse_object(text[match.end() :], caption)
    return SceneSpec((first, second), relation=relation)


def _find(
    text: str, options: list[str] | tuple[str, ...], what: str, caption: str, optional: bool = False
) -> str | None:
    hits = [o for o in options if re.search(rf"\b{re.escape(o)}\b", text)]
    if optional and not hits:
        return None
    if len(hits) != 1:
        raise ValueError(f"caption {caption!r} must name exactly one {what} per object")
    return hits[0]


def _parse_object(text: str, caption: str) -> SceneObject:
    colour = _find(text, list(COLOURS), "colour", caption)
    shape = _find(text, SHAPES, "shape", caption)
    size = _find(text, SIZES, "size", caption, optional=True)
    return SceneObject(colour or "", shape or "", size)


# --- drawing ---------------------------------------------------------------------------------------


def _draw(draw: ImageDraw.ImageDraw, obj: SceneObject, cx: float, cy: float, side: float) -> None:
    x0, y0, x1, y1 = cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2
    fill = COLOURS[obj.colour]
    if obj.shape == "circle":
        draw.ellipse((x0, y0, x1, y1), fill=fill)
    elif obj.shape == "square":
        draw.rectangle((x0, y0, x1, y1), fill=fill)
    else:  # an upright triangle filling half its bounding box, as in ``shapes``
        draw.polygon([(cx, y0), (x1, y1), (x0, y1)], fill=fill)


def render_scene(spec: SceneSpec, imsize: int = 64, rng: random.Random | None = None) -> Image.Image:
    """Draw ``spec`` on a grey ``imsize`` square; ``rng`` jitters positions and sizes slightly.

    Every object must have a size (a caption may leave it out; a scene to draw may not)."""
    rng = rng or random.Random(0)
    image = Image.new("RGB", (imsize, imsize), BACKGROUND)
    draw = ImageDraw.Draw(image)
    if not spec.is_pair:
        jitter, (fx, fy) = _ONE_JITTER, POSITIONS[spec.position or ""]
        centres = [(fx, fy)]
    else:
        jitter = _PAIR_JITTER
        dx, dy = RELATIONS[spec.relation or ""]
        centres = [
            (0.5 - dx * _PAIR_OFFSET, 0.5 - dy * _PAIR_OFFSET),
            (0.5 + dx * _PAIR_OFFSET, 0.5 + dy * _PAIR_OFFSET),
        ]
    for obj, (fx, fy) in zip(spec.objects, centres, strict=True):
        side = imsize * (_SIZE_FRACTION[obj.size or ""] + rng.uniform(-jitter, jitter) / 2)
        cx = imsize * (fx + rng.uniform(-jitter, jitter))
        cy = imsize * (fy + rng.uniform(-jitter, jitter))
        _draw(draw, obj, cx, cy, side)
    return image


def random_pair(rng: random.Random) -> SceneSpec:
    """A two-object scene: two different colours, any shapes and sizes, any relation."""
    colour_a, colour_b = rng.sample(list(COLOURS), 2)
    objects = (
        SceneObject(colour_a, rng.choice(SHAPES), rng.choice(SIZES)),
        SceneObject(colour_b, rng.choice(SHAPES), rng.choice(SIZES)),
    )
    return SceneSpec(objects, relation=rng.choice(list(RELATIONS)))


def make_scenes(
    count: int, seed: int = 0, pair_fraction: float = 0.5, size_drop: float = 0.2
) -> list[tuple[SceneSpec, str]]:
    """``count`` (scene, caption) pairs from ``seed``: one-object scenes cycle through all 180
    ``shapes`` combinations (balanced) and always name the size; two-object scenes are random and
    leave sizes out in ``size_drop`` of captions. Phrasings are drawn uniformly."""
    rng = random.Random(seed)
    singles = [SceneSpec.single(s) for s in all_specs()]
    pending: list[SceneSpec] = []
    out: list[tuple[SceneSpec, str]] = []
    for _ in range(count):
        if rng.random() < pair_fraction:
            spec = random_pair(rng)
            out.append((spec, spec.caption(rng.randrange(PHRASINGS), sizes=rng.random() >= size_drop)))
        else:
            if not pending:
                pending = list(singles)
                rng.shuffle(pending)
            spec = pending.pop()
            out.append((spec, spec.caption(rng.randrange(PHRASINGS))))
    return out


def answer_key(count: int = 1000, seed: int = 12345) -> list[tuple[SceneSpec, str]]:
    """The fixed evaluation captions: the first half one-object (balanced), the rest two-object."""
    n_single = count // 2
    return make_scenes(n_single, seed, pair_fraction=0.0) + make_scenes(
        count - n_single, seed + 1, pair_fraction=1.0
    )


class ScenesDataset(RenderedImages):
    """``count`` rendered scenes (deterministic from ``seed``), held in memory as uint8; about half
    of them two-object. Items are ``(image [3, imsize, imsize] in [-1, 1], caption)``."""

    def __init__(
        self, count: int = 20_000, imsize: int = 64, seed: int = 0, pair_fraction: float = 0.5
    ) -> None:
        scenes = make_scenes(count, seed, pair_fraction)
        self.specs = [s for s, _ in scenes]
        rng = random.Random(seed + 1)
        pictures = [render_scene(s, imsize, rng) for s in self.specs]
        super().__init__(pictures, [c for _, c in scenes], imsize)

    #: Prompts for the sample grids: two-object scenes (the README's examples first) and one-object ones.
    sample_prompts = [
        "a small red circle above a large blue square",
        "a green triangle left of a yellow square",
        "a large purple square to the right of a small orange circle",
        "a small yellow triangle below a large green circle",
        "a blue circle to the left of a red triangle",
        "a large red circle in the center",
        "a small green square on the left",
        "a large blue triangle on the right",
    ]


# --- reading an image back ------------------------------------------------------------------------

_PALETTE_NAMES = ["background", *COLOURS]
_PALETTE = np.array([BACKGROUND, *COLOURS.values()], dtype=np.float32)
#: An object is a connected region of one palette colour covering at least this much of the image
#: (a small triangle covers ~2.5 %); palette labels of noise form only specks far below it.
_MIN_OBJECT = 0.01


@dataclass(frozen=True)
class SeenObject:
    """One object found in an image: its colour, shape, size, centre (fractions of the side) and
    pixel count."""

    colour: str
    shape: str
    size: str
    centre: tuple[float, float]
    pixels: int

    @property
    def position(self) -> str:
        """The nearest of the five one-object anchor positions."""
        c = np.array(self.centre)
        return min(POSITIONS, key=lambda p: float(np.linalg.norm(c - np.array(POSITIONS[p]))))


def read_objects(image: Image.Image) -> list[SeenObject]:
    """Objects in ``image``, largest first: for each palette colour, its largest connected region
    (nearest-palette segmentation), if it covers at least 1 % of the image.

    Shape from how much of its bounding box the region fills (square ~1, circle ~0.79, triangle
    ~0.5), size from the box's longer side, centre from the box."""
    pixels = np.asarray(image.convert("RGB"), dtype=np.float32)
    side = pixels.shape[0]
    labels = ((pixels[:, :, None, :] - _PALETTE[None, None]) ** 2).sum(-1).argmin(-1)
    found: list[SeenObject] = []
    for index in range(1, len(_PALETTE)):
        mask = labels == index
        if mask.sum() < _MIN_OBJECT * labels.size:
            continue
        regions, n = ndimage.label(mask)
        sizes = np.bincount(regions.ravel(), minlength=n + 1)
        sizes[0] = 0
        biggest = int(sizes.argmax())
        if sizes[biggest] < _MIN_OBJECT * labels.size:
            continue
        ys, xs = np.nonzero(regions == biggest)
        x0, x1, y0, y1 = xs.min(), xs.max(), ys.min(), ys.max()
        width, height = x1 - x0 + 1, y1 - y0 + 1
        fill = sizes[biggest] / (width * height)
        shape = "square" if fill > 0.9 else "circle" if fill > 0.65 else "triangle"
        box = max(width, height) / side
        size = "small" if box < (_SIZE_FRACTION["small"] + _SIZE_FRACTION["large"]) / 2 else "large"
        centre = (float((x0 + x1 + 1) / 2 / side), float((y0 + y1 + 1) / 2 / side))
        found.append(SeenObject(_PALETTE_NAMES[index], shape, size, centre, int(sizes[biggest])))
    return sorted(found, key=lambda o: -o.pixels)


def relation_between(a: SeenObject, b: SeenObject) -> str:
    """How ``a`` stands to ``b``: along the axis on which their centres differ most."""
    dx, dy = a.centre[0] - b.centre[0], a.centre[1] - b.centre[1]
    if abs(dx) > abs(dy):
        return "to the left of" if dx < 0 else "to the right of"
    return "above" if dy < 0 else "below"


def check_scene(image: Image.Image, caption: str) -> dict[str, bool]:
    """Which of the caption's attributes ``image`` shows.

    One object (the image's largest): ``colour``, ``shape``, ``size``, ``position``. Two objects
    (each found by its colour): ``colour`` (both present), ``shape`` and ``size`` (both right; an
    unnamed size counts as right) and ``relation``."""
    wanted, seen = parse_scene_caption(caption), read_objects(image)
    if not wanted.is_pair:
        if not seen:
            return dict.fromkeys(SINGLE_ATTRIBUTES, False)
        (o,), s = wanted.objects, seen[0]
        return {
            "colour": o.colour == s.colour,
            "shape": o.shape == s.shape,
            "size": o.size == s.size,
            "position": wanted.position == s.position,
        }
    by_colour = {s.colour: s for s in seen}
    a, b = (by_colour.get(o.colour) for o in wanted.objects)
    if a is None or b is None:
        return dict.fromkeys(PAIR_ATTRIBUTES, False)
    pairs = list(zip(wanted.objects, (a, b), strict=True))
    return {
        "colour": True,
        "shape": all(o.shape == s.shape for o, s in pairs),
        "size": all(o.size in (None, s.size) for o, s in pairs),
        "relation": relation_between(a, b) == wanted.relation,
    }


def scene_scores(images: list[Image.Image], captions: list[str]) -> dict[str, float]:
    """Fractions of ``images`` showing their caption's attributes, split into one-object
    (``single_colour`` ... ``single_all``) and two-object (``pair_colour`` ... ``pair_relation``,
    ``pair_all``: both objects and the relation right) figures, plus ``all`` over every caption."""
    hits: dict[str, int] = {}
    totals = {"single": 0, "pair": 0}
    for image, caption in zip(images, captions, strict=True):
        result = check_scene(image, caption)
        kind = "pair" if "relation" in result else "single"
        totals[kind] += 1
        for name, ok in [*result.items(), ("all", all(result.values()))]:
            hits[f"{kind}_{name}"] = hits.get(f"{kind}_{name}", 0) + ok
    scores = {}
    for kind, names in (("single", SINGLE_ATTRIBUTES), ("pair", PAIR_ATTRIBUTES)):
        for name in (*names, "all"):
            scores[f"{kind}_{name}"] = hits.get(f"{kind}_{name}", 0) / max(totals[kind], 1)
    scores["all"] = (hits.get("single_all", 0) + hits.get("pair_all", 0)) / max(len(images), 1)
    return scores
