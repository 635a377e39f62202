"""DAMSM encoder folders: ``config.json``, ``vocab.json`` and ``encoders.safetensors`` (no pickle).

The weights file holds both encoders, keys prefixed ``text.`` and ``image.``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

from training.images import from_uint8
from training.text.damsm.config import DAMSMConfig
from training.text.damsm.model import ImageEncoder, TextEncoder
from training.text.vocab import Vocabulary

CONFIG_FILE = "config.json"
VOCAB_FILE = "vocab.json"
WEIGHTS_FILE = "encoders.safetensors"


@dataclass
class MatchingEncoders:
    """A trained text/image encoder pair whose features share one space, with its vocabulary."""

    text: TextEncoder
    image: ImageEncoder
    vocab: Vocabulary
    config: DAMSMConfig

    @property
    def device(self) -> torch.device:
        """Where the encoders' weights live."""
        return next(self.text.parameters()).device

    def tokenize(self, captions: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """``(ids [B, T], lengths [B])`` on the encoders' device."""
        ids, lengths = self.vocab.encode_batch(captions, self.config.max_words)
        return ids.to(self.device), lengths

    def encode_text(self, captions: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """``(words [B, D, T], sentence [B, D])`` of ``captions``; gradients flow when in train mode."""
        return self.text(*self.tokenize(captions))

    def encode_images(self, images: torch.Tensor | list[Image.Image]) -> tuple[torch.Tensor, torch.Tensor]:
        """``(regions [B, D, 8, 8], global [B, D])`` of images ``[B, 3, H, W]`` in [-1, 1] or PIL."""
        return self.image(images_to_tensor(images).to(self.device))

    def eval(self) -> MatchingEncoders:
        """Both encoders in eval mode (no dropout, batch-norm running statistics)."""
        self.text.eval()
        self.image.eval()
        return self


def images_to_tensor(images: torch.Tensor | list[Image.Image]) -> torch.Tensor:
    """A float ``[B, 3, H, W]`` batch in [-1, 1]: tensors pass through, PIL images are converted."""
    if isinstance(images, torch.Tensor):
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"images must be [B, 3, H, W], got {list(images.shape)}")
        return images.float()
    arrays = [np.asarray(im.convert("RGB"), dtype=np.float32) for im in images]
    if not arrays:
        raise ValueError("no images")
    return from_uint8(torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2))


def build_encoders(config: DAMSMConfig, vocab: Vocabulary) -> MatchingEncoders:
    """Freshly initialised encoders (``config.vocab_size`` is set from ``vocab``)."""
    config.vocab_size = len(vocab)
    return MatchingEncoders(TextEncoder(config), ImageEncoder(config), vocab, config)


def save_encoders(
    folder: str | Path, encoders: MatchingEncoders, extra: dict[str, Any] | None = None
) -> Path:
    """Write the three files into ``folder``; ``extra`` goes into config.json under ``"training"``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {
        f"{prefix}.{k}": v.detach().cpu().contiguous()
        for prefix, module in (("text", encoders.text), ("image", encoders.image))
        for k, v in module.state_dict().items()
    }
    save_file(tensors, folder / WEIGHTS_FILE)
    data = encoders.config.to_dict()
    data["version"] = encoders.config.version or folder.name
    data["training"] = extra or {}
    (folder / CONFIG_FILE).write_text(json.dumps(data, indent=2) + "\n")
    encoders.vocab.save(folder / VOCAB_FILE)
    return folder


def load_encoders(folder: str | Path, device: str | torch.device = "cpu") -> MatchingEncoders:
    """Load a folder written by :func:`save_encoders`, frozen and in eval mode on ``device``."""
    folder = Path(folder)
    for name in (CONFIG_FILE, VOCAB_FILE, WEIGHTS_FILE):
        if not (folder / name).is_file():
            raise FileNotFoundError(f"no {name} in DAMSM encoder folder {folder}")
    config = DAMSMConfig.load(folder / CONFIG_FILE)
    vocab = Vocabulary.load(folder / VOCAB_FILE)
    if config.vocab_size != len(vocab):
        raise ValueError(f"config says {config.vocab_size} words, {VOCAB_FILE} has {len(vocab)}")
    encoders = build_encoders(config, vocab)
    tensors = load_file(folder / WEIGHTS_FILE)
    for prefix, module in (("text", encoders.text), ("image", encoders.image)):
        module.load_state_dict(
            {k[len(prefix) + 1 :]: v for k, v in tensors.items() if k.startswith(prefix + ".")}
        )
        module.to(device).requires_grad_(False)
    return encoders.eval()
