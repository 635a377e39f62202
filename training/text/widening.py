"""Warm-start a model whose text condition grew: the new condition inputs start with zero weights.

A model trained on a ``d``-wide condition (MiniLM, 384) can seed one on a wider condition whose first
``d`` features are the old ones (``minilm-slots``: MiniLM then the scene slots): every weight matrix
that reads the condition gains input columns, which start at zero, so the widened model draws
exactly what the old one drew until training teaches it to use the new features.
"""

from __future__ import annotations

import torch


def widened_weights(
    target: dict[str, torch.Tensor], source: dict[str, torch.Tensor]
) -> tuple[dict[str, torch.Tensor], list[str]]:
    """``source``'s tensors shaped as ``target``'s, and the names of those that were widened.

    A tensor may differ from its target only in its last dimension, being narrower there (a weight
    matrix with new input columns); its values fill the leading columns and the rest are zero.
    Raises ``ValueError`` naming the first tensor that is missing or cannot be fitted.
    """
    out: dict[str, torch.Tensor] = {}
    grown: list[str] = []
    for name, want in target.items():
        have = source.get(name)
        if have is None:
            raise ValueError(f"warm start: the source model has no {name!r}")
        have = have.to(want.dtype)
        if have.shape == want.shape:
            out[name] = have
            continue
        fits = have.dim() == want.dim() >= 2 and have.shape[:-1] == want.shape[:-1]
        if not fits or have.shape[-1] > want.shape[-1]:
            raise ValueError(
                f"warm start: {name!r} is {tuple(have.shape)}, the model needs {tuple(want.shape)}"
            )
        wide = torch.zeros_like(want)
        wide[..., : have.shape[-1]] = have
        out[name] = wide
        grown.append(name)
    return out, grown


def load_widened(module: torch.nn.Module, source: dict[str, torch.Tensor]) -> list[str]:
    """Load ``source`` into ``module`` through :func:`widened_weights`; returns the widened names."""
    weights, grown = widened_weights(module.state_dict(), source)
    module.load_state_dict(weights)
    return grown
