"""Captions -> DF-GAN condition vectors, identically in training, evaluation and the engine."""

from __future__ import annotations

import torch

from training.dfgan.config import DFGANConfig
from training.text.encoders import TextEncoder, truncate_caption


def sentence_vectors(encoder: TextEncoder, texts: list[str], config: DFGANConfig) -> torch.Tensor:
    """Encode ``texts`` (cut to ``config.max_caption_tokens`` words) and scale by ``config.cond_scale``.

    The scale matters because the generator's condition is ``[noise; sentence]``: a 100-d standard
    normal noise has norm ~10, a unit-norm MiniLM vector has norm 1, and at scale 1 the generator
    learnt to ignore the text (a first shapes run drew the same picture for every prompt).
    """
    emb = encoder.encode([truncate_caption(t, config.max_caption_tokens) for t in texts])
    return emb * config.cond_scale
