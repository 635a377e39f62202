"""A word vocabulary for the DAMSM text encoder: captions -> padded id tensors, saved as JSON.

Ids 0, 1 and 2 are always ``<pad>``, ``<end>`` and ``<unk>``; real words follow, most frequent
first (ties alphabetical), so building twice from the same captions gives the same ids.
Words are split with :func:`training.text.tokenize.tokenize` (lower-cased, punctuation dropped), as
AttnGAN and DF-GAN do.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

import torch

from training.text.tokenize import tokenize

PAD, END, UNK = "<pad>", "<end>", "<unk>"
SPECIALS = (PAD, END, UNK)


class Vocabulary:
    """A fixed mapping between words and integer ids."""

    pad_id = 0
    end_id = 1
    unk_id = 2

    def __init__(self, words: Iterable[str]) -> None:
        """``words``: the real words in id order (ids start after the three special tokens)."""
        words = list(words)
        clash = [w for w in words if w in SPECIALS]
        if clash:
            raise ValueError(f"{clash[0]!r} is a reserved token")
        if len(set(words)) != len(words):
            raise ValueError("vocabulary words must be unique")
        self.itos: list[str] = [*SPECIALS, *words]
        self.stoi: dict[str, int] = {w: i for i, w in enumerate(self.itos)}

    @classmethod
    def build(cls, captions: Iterable[str], min_count: int = 1) -> Vocabulary:
        """Every token seen at least ``min_count`` times in ``captions``; rarer ones become ``<unk>``."""
        counts = Counter(token for caption in captions for token in tokenize(caption))
        kept = [w for w, n in counts.items() if n >= min_count]
        return cls(sorted(kept, key=lambda w: (-counts[w], w)))

    def __len__(self) -> int:
        return len(self.itos)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Vocabulary) and self.itos == other.itos

    def encode(self, caption: str, max_len: int = 0, add_end: bool = False) -> list[int]:
        """Ids of ``caption``'s tokens (unknown words -> ``<unk>``), cut to ``max_len`` ids when it is
        positive; with ``add_end`` an ``<end>`` id follows the words (and counts towards ``max_len``).

        Always at least one id: an empty caption encodes as ``[<unk>]`` (or ``[<end>]`` with
        ``add_end``), because a packed LSTM sequence cannot have length 0.
        """
        ids = [self.stoi.get(token, self.unk_id) for token in tokenize(caption)]
        if add_end:
            ids.append(self.end_id)
        if max_len > 0:
            if add_end and len(ids) > max_len:
                ids = [*ids[: max_len - 1], self.end_id]
            ids = ids[:max_len]
        return ids or [self.unk_id]

    def decode(self, ids: Iterable[int]) -> str:
        """The words of ``ids``, space-separated, stopping at the first ``<pad>`` or ``<end>``."""
        words = []
        for i in ids:
            if i in (self.pad_id, self.end_id):
                break
            words.append(self.itos[i])
        return " ".join(words)

    def encode_batch(
        self, captions: list[str], max_len: int = 0, add_end: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(ids [B, T] long, lengths [B] long)``: captions right-padded with ``<pad>`` to the
        longest one; ``T`` is at most ``max_len`` when it is positive."""
        encoded = [self.encode(c, max_len, add_end) for c in captions]
        lengths = torch.tensor([len(e) for e in encoded], dtype=torch.long)
        width = int(lengths.max()) if encoded else 0
        ids = torch.full((len(encoded), width), self.pad_id, dtype=torch.long)
        for row, e in enumerate(encoded):
            ids[row, : len(e)] = torch.tensor(e, dtype=torch.long)
        return ids, lengths

    def to_json(self) -> str:
        """The vocabulary as JSON (``{"words": [...]}``, specials first)."""
        return json.dumps({"words": self.itos}, indent=1) + "\n"

    @classmethod
    def from_json(cls, text: str) -> Vocabulary:
        """Inverse of :meth:`to_json`."""
        words = json.loads(text)["words"]
        if list(words[: len(SPECIALS)]) != list(SPECIALS):
            raise ValueError(f"vocabulary must start with {SPECIALS}")
        return cls(words[len(SPECIALS) :])

    def save(self, path: str | Path) -> None:
        """Write :meth:`to_json` to ``path``."""
        Path(path).write_text(self.to_json())

    @classmethod
    def load(cls, path: str | Path) -> Vocabulary:
        """Read a vocabulary written by :meth:`save`."""
        return cls.from_json(Path(path).read_text())
