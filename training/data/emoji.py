"""Emoji artwork from Google's Noto Color Emoji font (Debian ``fonts-noto-color-emoji``), captioned
with each character's Unicode name and, where the PyPI ``emoji`` package is installed, its CLDR short
name ("pizza" for SLICE OF PIZZA) and the common aliases ("poop", "cat").

The first use renders every single-code-point emoji the font has to a PNG and writes
``captions.json`` beside them under ``DATA_DIR/datasets/emoji``; later uses read that cache and need
neither the font nor fontTools. The font is under the SIL Open Font License 1.1 (see
docs/datasets.md): the renders may be used for training and shipped, the font file itself stays OFL.
"""

from __future__ import annotations

import json
import unicodedata
from pathlib import Path
from typing import Any, Literal

from PIL import Image, ImageDraw, ImageFont

from training.data.captions import CaptionedImages, Record
from training.data.shapes import BACKGROUND

#: Where Debian / Ubuntu install the font.
FONT_PATHS = (
    Path("/usr/share/fonts/truetype/noto/NotoColorEmoji.ttf"),
    Path("/usr/share/fonts/noto/NotoColorEmoji.ttf"),
    Path("/usr/share/fonts/google-noto-emoji/NotoColorEmoji.ttf"),
)
INSTALL_HINT = "sudo apt-get install fonts-noto-color-emoji"
#: The only size the font's bitmaps come in (CBDT strikes are 109 px).
FONT_SIZE = 109
#: Side of each cached PNG: the ~120 px glyph centred with a margin, so the random crop
#: (76 -> 64 at 64 px) cuts background, not artwork.
CANVAS = 144
CACHE_VERSION = 2
#: Every ``HOLDOUT_EVERY``-th emoji (in code-point order) is left out of the ``train`` split, so an
#: evaluation can ask for pictures the model never saw (``split="heldout"``).
HOLDOUT_EVERY = 20
#: Aliases not worth teaching a chatbot.
_SKIP_ALIASES = {"shit"}
Split = Literal["train", "heldout", "all"]
_SKIP_CATEGORIES = {"Cf", "Sk", "Me", "Zs", "Nd", "Cc"}  # joiners, tags, skin-tone modifiers, keycap, ASCII


class EmojiSourceMissing(FileNotFoundError, ValueError):
    """Neither a rendered cache nor the Noto Color Emoji font is available (a ``ValueError`` too,
    like :class:`~training.data.captions.DatasetFilesMissing`)."""


def find_font(font: str | Path | None = None) -> Path:
    """``font`` if given (it must exist), else the first installed Noto Color Emoji font."""
    candidates = [Path(font)] if font is not None else list(FONT_PATHS)
    for path in candidates:
        if path.is_file():
            return path
    raise EmojiSourceMissing(
        f"emoji dataset: no rendered cache and no Noto Color Emoji font (looked at "
        f"{', '.join(map(str, candidates))}). Install it with `{INSTALL_HINT}` (Debian/Ubuntu), "
        f"or pass font=PATH to NotoColorEmoji.ttf."
    )


def emoji_codepoints(font_path: Path) -> list[int]:
    """Code points the font draws that stand alone as emoji and have a Unicode name in this Python.

    Skipped: ASCII (digits, ``#``, ``*``, space are keycap parts), joiners and tag characters,
    skin-tone modifiers, and the regional-indicator letters (flags need pairs of them).
    """
    from fontTools.ttLib import TTFont

    cmap = TTFont(str(font_path), lazy=True).getBestCmap()
    return [
        cp
        for cp in sorted(cmap)
        if cp > 0x7F
        and not 0x1F1E6 <= cp <= 0x1F1FF
        and unicodedata.category(chr(cp)) not in _SKIP_CATEGORIES
        and unicodedata.name(chr(cp), "")
    ]


def emoji_names(char: str) -> list[str]:
    """The names of one emoji, most common first: the CLDR short name and the aliases of the PyPI
    ``emoji`` package (if installed), then the Unicode name; lower case, no duplicates."""
    names: list[str] = []
    try:
        import emoji as emoji_package
    except ImportError:  # optional: without it the captions are the Unicode names only
        entry: dict[str, Any] = {}
    else:
        data = emoji_package.EMOJI_DATA
        entry = data.get(char) or data.get(char + "\ufe0f") or {}
    for raw in [entry.get("en", ""), *entry.get("alias", []), unicodedata.name(char)]:
        name = raw.strip(":").replace("_", " ").lower()
        if name and name not in names and name not in _SKIP_ALIASES:
            names.append(name)
    return names


def emoji_captions(char: str) -> list[str]:
    """Training captions for one emoji: each name, "a(n) NAME" and "NAME emoji" for the first, e.g.
    ``['red apple', 'a red apple', 'red apple emoji', 'apple']`` for U+1F34E."""
    names = emoji_names(char)
    first = names[0]
    article = "an" if first[0] in "aeiou" else "a"
    return [first, f"{article} {first}", f"{first} emoji", *names[1:]]


def heldout_captions(char: str) -> list[str]:
    """Phrasings never used in training (for the held-out caption check)."""
    first = emoji_names(char)[0]
    return [f"a picture of {first}", f"{first} icon"]


def render_emoji(char: str, font: ImageFont.FreeTypeFont) -> Image.Image | None:
    """``char`` drawn in colour, centred on a transparent ``CANVAS`` square; ``None`` if it draws nothing."""
    layer = Image.new("RGBA", (2 * CANVAS, 2 * CANVAS), (0, 0, 0, 0))
    ImageDraw.Draw(layer).text((CANVAS // 2, CANVAS // 2), char, font=font, embedded_color=True)
    box = layer.getbbox()
    if box is None:
        return None
    glyph = layer.crop(box)
    if max(glyph.size) > CANVAS:
        glyph.thumbnail((CANVAS, CANVAS), Image.Resampling.LANCZOS)
    canvas = Image.new("RGBA", (CANVAS, CANVAS), (0, 0, 0, 0))
    canvas.paste(glyph, ((CANVAS - glyph.width) // 2, (CANVAS - glyph.height) // 2))
    return canvas


def build_emoji_cache(cache_dir: Path, font: str | Path | None = None) -> Path:
    """Render every emoji of the font to ``cache_dir/uXXXX.png`` and write ``cache_dir/captions.json``
    (written last, so a half-built cache is rebuilt next time). Returns the json's path."""
    font_path = find_font(font)
    pil_font = ImageFont.truetype(str(font_path), FONT_SIZE)
    cache_dir.mkdir(parents=True, exist_ok=True)
    items = []
    for cp in emoji_codepoints(font_path):
        image = render_emoji(chr(cp), pil_font)
        if image is None:
            continue
        file = f"u{cp:04x}.png"
        image.save(cache_dir / file)
        items.append(
            {
                "file": file,
                "codepoint": f"U+{cp:04X}",
                "captions": emoji_captions(chr(cp)),
                "heldout_captions": heldout_captions(chr(cp)),
            }
        )
    index = cache_dir / "captions.json"
    meta = {
        "version": CACHE_VERSION,
        "font": font_path.name,
        "font_version": _font_version(font_path),
        "licence": "SIL Open Font License 1.1 (Noto Color Emoji, Google)",
        "captions_from": _caption_source(),
        "items": items,
    }
    index.write_text(json.dumps(meta, indent=1, ensure_ascii=False))
    return index


def _font_version(font_path: Path) -> str:
    from fontTools.ttLib import TTFont

    return str(TTFont(str(font_path), lazy=True)["name"].getDebugName(5) or "")


def _caption_source() -> str:
    try:
        import emoji as emoji_package
    except ImportError:
        return "unicodedata names"
    return f"unicodedata names + CLDR short names and aliases (PyPI emoji {emoji_package.__version__})"


def emoji_items(data_dir: Path | None, font: str | Path | None = None) -> list[dict[str, Any]]:
    """The cache's item list (``file``, ``codepoint``, ``captions``, ``heldout_captions``), building
    the cache under ``data_dir/datasets/emoji`` first if needed (``data_dir`` defaults to ``./data``)."""
    cache_dir = (data_dir if data_dir is not None else Path("data")) / "datasets" / "emoji"
    index = cache_dir / "captions.json"
    meta = json.loads(index.read_text()) if index.is_file() else {}
    if meta.get("version") != CACHE_VERSION:
        meta = json.loads(build_emoji_cache(cache_dir, font).read_text())
    return [dict(item, file=str(cache_dir / item["file"])) for item in meta["items"]]


def in_split(index: int, split: Split) -> bool:
    """Whether the ``index``-th emoji (code-point order) belongs to ``split``."""
    heldout = index % HOLDOUT_EVERY == HOLDOUT_EVERY - 1
    return split == "all" or heldout == (split == "heldout")


def emoji_records(
    data_dir: Path | None, font: str | Path | None = None, split: Split = "train"
) -> list[Record]:
    """Records of ``split`` (``train``: all but every ``HOLDOUT_EVERY``-th emoji; ``heldout``: those;
    ``all``) from the cache, building it first if needed."""
    items = emoji_items(data_dir, font)
    return [
        Record(Path(item["file"]), tuple(item["captions"]))
        for i, item in enumerate(items)
        if in_split(i, split)
    ]


class EmojiDataset(CaptionedImages):
    """About 1,360 Noto Color Emoji renders (``split`` ``train``: 95 % of them), each with a few
    captions (:func:`emoji_captions`), one item per (image, caption) pair by default so that both
    trainers see every caption.

    Transparent pixels are laid on the shapes dataset's mid-grey (a white background drove the
    tanh generator into saturation there). Flipping is off by default: arrows, hands and lettered
    emoji would contradict their names ("leftwards arrow") when mirrored.
    """

    name = "emoji"
    sample_prompts = [
        "grinning face",
        "red apple",
        "dog face",
        "rocket",
        "sun with face",
        "pile of poo",
        "slice of pizza",
        "snowman",
    ]

    def __init__(
        self,
        data_dir: Path | None,
        imsize: int = 64,
        font: str | Path | None = None,
        split: Split = "train",
        **options: Any,
    ) -> None:
        options.setdefault("flip", False)
        options.setdefault("background", BACKGROUND)
        options.setdefault("pairing", "all")
        super().__init__(emoji_records(data_dir, font, split), imsize, **options)
