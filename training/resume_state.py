"""A training run's resumable state, shared by the trainers: module weights, optimiser moments, RNG
states and a step, as ``training_state.safetensors`` + ``training_state.json`` (never pickled).

A run that resumes from it continues exactly as if it had never stopped.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

STATE_FILE = "training_state.safetensors"
STATE_META_FILE = "training_state.json"


def save_training_state(
    folder: str | Path,
    modules: dict[str, nn.Module],
    optimizers: dict[str, torch.optim.Optimizer],
    meta: dict[str, Any],
    extra_tensors: dict[str, torch.Tensor] | None = None,
) -> None:
    """Save module weights, optimiser state and ``extra_tensors`` (e.g. RNG states) as safetensors,
    and ``meta`` plus optimiser hyper-parameters as JSON, so :func:`load_training_state` can resume
    a run exactly."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {f"extra.{k}": v.detach().cpu().contiguous() for k, v in (extra_tensors or {}).items()}
    for name, module in modules.items():
        for key, value in module.state_dict().items():
            tensors[f"module.{name}.{key}"] = value.detach().cpu().contiguous()
    groups: dict[str, Any] = {}
    for name, opt in optimizers.items():
        state = opt.state_dict()
        for index, param_state in state["state"].items():
            for key, value in param_state.items():
                tensors[f"optim.{name}.{index}.{key}"] = torch.as_tensor(value).detach().cpu().contiguous()
        groups[name] = state["param_groups"]
    atomic_save_tensors(tensors, folder / STATE_FILE)
    atomic_write_text(folder / STATE_META_FILE, json.dumps({"meta": meta, "param_groups": groups}, indent=2))


def load_training_state(
    folder: str | Path,
    modules: dict[str, nn.Module],
    optimizers: dict[str, torch.optim.Optimizer],
) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """Restore what :func:`save_training_state` wrote into ``modules`` and ``optimizers``.

    Returns the ``meta`` dict and the ``extra_tensors`` that were saved with them."""
    folder = Path(folder)
    tensors = load_file(folder / STATE_FILE)
    saved = json.loads((folder / STATE_META_FILE).read_text())
    for name, module in modules.items():
        prefix = f"module.{name}."
        module.load_state_dict({k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)})
    for name, opt in optimizers.items():
        prefix = f"optim.{name}."
        state: dict[int, dict[str, torch.Tensor]] = {}
        for key, value in tensors.items():
            if key.startswith(prefix):
                index, field = key[len(prefix) :].split(".", 1)
                state.setdefault(int(index), {})[field] = value
        groups = saved["param_groups"][name]
        for group in groups:
            if "betas" in group:
                group["betas"] = tuple(group["betas"])
        opt.load_state_dict({"state": state, "param_groups": groups})
    extra = {k[len("extra.") :]: v for k, v in tensors.items() if k.startswith("extra.")}
    return saved["meta"], extra


def has_training_state(folder: str | Path) -> bool:
    """Whether ``folder`` holds a resumable training state."""
    return (Path(folder) / STATE_FILE).is_file() and (Path(folder) / STATE_META_FILE).is_file()


def atomic_save_tensors(tensors: dict[str, torch.Tensor], path: Path) -> None:
    """Save ``tensors`` as safetensors at ``path``: written beside it, then renamed into place, so a
    worker reading the folder never sees a half-written file."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    save_file(tensors, tmp)
    tmp.replace(path)


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` the same write-then-rename way."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)
