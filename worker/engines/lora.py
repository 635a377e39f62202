"""LoRAs from the operator's folder, applied to a loaded pipeline for one batch and taken out after.

A LoRA file is a ``.safetensors`` state dict: the layout diffusers' ``save_lora_weights`` writes
(``<component>.<module path>.lora_A.weight`` / ``.lora_B.weight``), or kohya's (``lora_unet_…``
``lora_down`` / ``lora_up``), as people download them.

Two ways, one contract (weight 0 changes nothing; afterwards the model is bit for bit the one before):

- **diffusers' adapter API** for every pipeline that has it (Stable Diffusion, SDXL, Flux…):
  ``load_lora_weights(adapter_name=…)``, ``set_adapters(names, adapter_weights)`` for the batch, and
  ``unload_lora_weights()`` after it, which takes the peft layers out again. diffusers reads every
  LoRA layout it knows (kohya's included) and several LoRAs mix with their own weights.
- **a merge** for pipelines without it (our ``PixelDiffusionPipeline``): the low-rank update
  ``weight · (alpha / rank) · B·A`` is added to each module's weight and the original weights are
  copied back when the batch ends.

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
    """Apply ``loras`` ((name, weight) pairs) to ``pipe`` while the block runs; take them out after.

    Uses diffusers' adapter API where the pipeline has it, else merges the weights in (see the
    module's docstring). A weight of 0 leaves the model untouched. Raises :class:`LoraNotAvailable`
    (nothing stays applied) for a missing file or a LoRA made for another model.
    """
    wanted = [(name, weight) for name, weight in loras if weight != 0]
    if not wanted:
        yield
    elif hasattr(pipe, "load_lora_weights") and _has_peft():
        with _adapters(pipe, folder, wanted):
            yield
    else:
        with _merged(pipe, folder, wanted):
            yield


def _has_peft() -> bool:
    """True when peft (diffusers' adapter backend) imports."""
    try:
        import peft  # noqa: F401
    except ImportError:
        return False
    return True


def adapter_name(name: str) -> str:
    """The adapter name a LoRA file gets inside the pipeline (``.`` is not allowed in module names)."""
    return "ib_" + name.replace(".", "_").replace("-", "_")


@contextmanager
def _adapters(pipe: Any, folder: Path | None, loras: Sequence[tuple[str, float]]) -> Iterator[None]:
    """diffusers' adapter API: load each LoRA as a named adapter, weight them, unload after."""
    names: list[str] = []
    try:
        for name, _ in loras:
            path = lora_file(folder, name)
            adapter = adapter_name(name)
            names.append(adapter)
            _load_adapter(pipe, path, adapter)
        pipe.set_adapters(names, adapter_weights=[float(weight) for _, weight in loras])
        yield
    finally:
        if names:
            pipe.unload_lora_weights()


def _load_adapter(pipe: Any, path: Path, adapter: str) -> None:
    """Load ``path`` as ``adapter``; refuse a file that loads into no module of this pipeline."""
    try:
        pipe.load_lora_weights(str(path.parent), weight_name=path.name, adapter_name=adapter)
    except (ValueError, KeyError, IndexError, AttributeError, RuntimeError, TypeError) as exc:
        # diffusers' errors for a file whose keys fit none of its layouts or not this model.
        reason = f"the LoRA {path.stem!r} is for another model or does not fit this one"
        raise LoraNotAvailable(f"{reason}: {str(exc)[:160]}") from None
    loaded = pipe.get_list_adapters()
    if not any(adapter in names for names in loaded.values()):
        # diffusers only warns when no key matches a module: a LoRA for another model.
        raise LoraNotAvailable(f"the LoRA {path.stem!r} is for another model: none of its modules is here")


@contextmanager
def _merged(pipe: Any, folder: Path | None, loras: Sequence[tuple[str, float]]) -> Iterator[None]:
    """Add each LoRA's update to the weights it names; copy the saved originals back after."""
    from safetensors.torch import load_file

    saved: dict[torch.nn.Module, torch.Tensor] = {}
    try:
        for name, weight in loras:
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
