"""Which torch device a run or an engine uses."""

from __future__ import annotations


def resolve_device(device: str) -> str:
    """``"auto"`` -> ``"cuda"`` when a GPU is visible, else ``"cpu"``; anything else unchanged."""
    if device == "auto":
        import torch  # lazily: importing this module costs nothing

        return "cuda" if torch.cuda.is_available() else "cpu"
    return device
