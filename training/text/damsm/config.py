"""The DAMSM encoders' hyper-parameters, stored as ``config.json`` beside the weights."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any


@dataclass
class DAMSMConfig:
    """Architecture, loss and training settings of a DAMSM text/image encoder pair.

    The loss smoothing factors are AttnGAN's (``TRAIN.SMOOTH`` in its configs): ``gamma1`` sharpens the
    word-to-region attention, ``gamma2`` weighs how much the best-matching words dominate a caption's
    score, ``gamma3`` scales the similarities fed to the softmax over the batch.
    """

    vocab_size: int = 0
    embedding_dim: int = 64
    #: Hidden size of each LSTM direction; the feature width is twice this.
    hidden_dim: int = 128
    #: Captions are cut to this many word ids (AttnGAN: ``TEXT.WORDS_NUM = 18``).
    max_words: int = 18
    dropout: float = 0.5
    imsize: int = 64
    #: Channels of the image encoder's first conv; doubled at each of its downsamplings.
    image_channels: int = 16
    gamma1: float = 4.0
    gamma2: float = 5.0
    gamma3: float = 10.0
    # Training.
    batch_size: int = 48
    learning_rate: float = 2e-3
    #: Gradient-norm clip of the text encoder (AttnGAN: ``TRAIN.RNN_GRAD_CLIP = 0.25``).
    rnn_grad_clip: float = 0.25
    seed: int = 0
    version: str = ""

    @property
    def feature_dim(self) -> int:
        """Width of word, sentence, region and global image features."""
        return 2 * self.hidden_dim

    def to_dict(self) -> dict[str, Any]:
        """The config as a plain dict (JSON-ready)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DAMSMConfig:
        """A config from a dict; keys that are not fields (e.g. ``"training"``) are ignored."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})

    @classmethod
    def load(cls, path: str | Path) -> DAMSMConfig:
        """Read a ``config.json``."""
        return cls.from_dict(json.loads(Path(path).read_text()))
