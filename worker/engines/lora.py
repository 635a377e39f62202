"""LoRAs from the operator's folder, merged into a loaded pipeline for one batch and taken out after.

A LoRA file is a ``.safetensors`` state dict in the layout diffusers' ``save_lora_weights`` writes:
``<component>.<module path>.lora_A.weight`` / ``.lora_B.weight`` (optionally ``.alpha``), where the
component is a pipeline attribute (``unet``, ``text_encoder``, ``transformer``); kohya's
``lora_down``/``lora_up`` names are read too. diffusers' own adapter API (``load_lora_weights`` /
``set_adapters``) needs the ``peft`` package, which this project does not install, so the low-rank
update ``weight · (alpha / rank) · B·A`` is added to each module's weight here, and the original
weights are copied back when the batch ends: the model afterwards is bit for bit the one before.

Names come from chat only through :mod:`core.model_catalog`; this module checks again that a name is a
plain name and a file in the folder, so no chat text ever becomes a path.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from core.model_catalog import NAME

_A_SUFFIXES = (".lora_A.weight", ".lora_down.weight")
_B_SUFFIXES = (".lora_B.weight", ".lora_up.weight")


class LoraNotAvailable(ValueError):
    """The LoRA is not in the operator's folder, or does not fit the loaded model."""


def lora_file(folder: Path | None, name: str) -> Path:
    """The file of LoRA ``name`` in ``folder`` (found by listing the folder, never by joining a path)."""
    if folder is None or not NAME.fullmatch(name):
        raise LoraNotAvailable(f"no LoRA called {name!r}")
    for path in Path(folder).glob("*.safetensors"):
        if path.stem == name and path.is_file():
            return path
    raise LoraNotAvailable(f"no LoRA called {name!r} in the LoRA folder")


def _pairs(state: dict[str, torch.Tensor]) -> dict[str, tuple[torch.Tensor, torch.Tensor, float | None]]:
    """Module path (with component) -> (A [r, in…], B [out, r…], alpha or None)."""
    pairs: dict[str, tuple[torch.Tensor, torch.Tensor, float | None]] = {}
    for key, a in state.items():
        for a_suffix, b_suffix in zip(_A_SUFFIXES, _B_SUFFIXES, strict=True):
            if key.endswith(a_suffix):
                module = key[: -len(a_suffix)]
                b = state.get(module + b_suffix)
                if b is None:
                    raise LoraNotAvailable(f"{module} has {a_suffix} but no {b_suffix}")
                alpha = state.get(module + ".alpha")
                pairs[module] = (a, b, None if alpha is None else float(alpha))
    if not pairs:
        raise LoraNotAvailable("the file holds no LoRA weights (no lora_A/lora_B pairs)")
    return pairs


def _delta(weight: torch.Tensor, a: torch.Tensor, b: torch.Tensor, alpha: float | None) -> torch.Tensor:
    """B·A shaped like ``weight`` (a Linear's [out, in] or a Conv2d's [out, in, kh, kw]), scaled."""
    rank = a.shape[0]
    update = b.flatten(1).float() @ a.flatten(1).float()
    if update.numel() != weight.numel():
        raise LoraNotAvailable(
            f"a LoRA of shape {tuple(update.shape)} does not fit a weight {tuple(weight.shape)}"
        )
    scale = 1.0 if alpha is None else alpha / rank
    return (update * scale).reshape(weight.shape)


def _module(pipe: Any, path: str) -> torch.nn.Module:
    component, _, inner = path.partition(".")
    root = getattr(pipe, component, None)
    if not isinstance(root, torch.nn.Module):
        raise LoraNotAvailable(f"this model has no {component!r} for the LoRA")
    try:
        module = root.get_submodule(inner)
    except AttributeError:
        raise LoraNotAvailable(f"this model has no module {path!r}: the LoRA is for another model") from None
    if not isinstance(getattr(module, "weight", None), torch.Tensor):
        raise LoraNotAvailable(f"{path!r} has no weight")
    return module


@contextmanager
def applied_loras(pipe: Any, folder: Path | None, loras: Sequence[tuple[str, float]]) -> Iterator[None]:
    """Merge ``loras`` ((name, weight) pairs) into ``pipe`` while the block runs; restore after.

    A weight of 0 leaves the model untouched. Raises :class:`LoraNotAvailable` (nothing stays
    applied) for a missing file or a LoRA made for another model.
    """
    saved: dict[torch.nn.Module, torch.Tensor] = {}
    try:
        for name, weight in loras:
            if weight == 0:
                continue
            from safetensors.torch import load_file

            for path, (a, b, alpha) in _pairs(load_file(lora_file(folder, name))).items():
                module = _module(pipe, path)
                target: torch.Tensor = module.weight
                if module not in saved:
                    saved[module] = target.detach().clone()
                update = _delta(target, a, b, alpha) * weight
                with torch.no_grad():
                    target.add_(update.to(device=target.device, dtype=target.dtype))
        yield
    finally:
        with torch.no_grad():
            for module, original in saved.items():
                module.weight.copy_(original)
