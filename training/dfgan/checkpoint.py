"""DF-GAN checkpoints as folders: ``config.json`` beside ``generator.safetensors`` (diffusers style).

Nothing here unpickles: weights are safetensors, everything else is JSON. A training folder also
holds the resumable state (discriminator, EMA, optimisers, step; :mod:`training.resume_state`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file
from torch import nn

from training.dfgan.conditioning import sentence_vectors
from training.dfgan.config import DFGANConfig
from training.dfgan.model import NetG
from training.resume_state import atomic_save_tensors, atomic_write_text
from training.seeds import seed_noise
from training.text.encoders import TextEncoder, load_text_encoder

CONFIG_FILE = "config.json"
GENERATOR_FILE = "generator.safetensors"

#: Version label of the untrained placeholder generator.
RANDOM_INIT_VERSION = "random-init"


def build_generator(config: DFGANConfig) -> NetG:
    """A freshly initialised generator of the architecture ``config`` describes."""
    return NetG(ngf=config.ngf, nz=config.nz, cond_dim=config.cond_dim, imsize=config.imsize)


def save_checkpoint(
    folder: str | Path,
    netG: nn.Module,
    config: DFGANConfig,
    extra: dict[str, Any] | None = None,
    ema: nn.Module | None = None,
) -> Path:
    """Write ``generator.safetensors`` (the ``ema`` weights when given, else ``netG``'s) and
    ``config.json`` (the config plus ``extra`` under ``"training"``) into ``folder``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    weights = (ema if ema is not None else netG).state_dict()
    tensors = {k: v.detach().cpu().contiguous() for k, v in weights.items()}
    atomic_save_tensors(tensors, folder / GENERATOR_FILE)
    data = json.loads(config.to_json())
    data["version"] = config.version or folder.name
    data["training"] = extra or {}
    atomic_write_text(folder / CONFIG_FILE, json.dumps(data, indent=2) + "\n")
    return folder


@dataclass
class LoadedGenerator:
    """A generator ready for inference, with the text encoder its condition vectors come from."""

    netG: NetG
    config: DFGANConfig
    version: str
    text_encoder: TextEncoder

    @property
    def device(self) -> torch.device:
        """Where the generator's weights are."""
        return next(self.netG.parameters()).device

    def embed(self, prompts: Sequence[str]) -> torch.Tensor:
        """Condition vectors ``[len(prompts), cond_dim]`` on :attr:`device`, preprocessed exactly as in
        training (truncation, scale); the prompts are encoded as one batch."""
        return sentence_vectors(self.text_encoder, list(prompts), self.config).to(self.device)

    def draw(
        self,
        prompts: Sequence[str],
        seeds: Sequence[int],
        sentences: torch.Tensor | None = None,
        noise: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Image ``i`` shows ``prompts[i]`` from the noise of ``seeds[i]`` alone: ``[N, 3, H, W]`` in
        [-1, 1] on the CPU. The one place DF-GAN turns seeds into pictures (engine, evaluation, grids,
        R-precision, FID, compare).

        ``sentences`` (``[N, cond_dim]``, e.g. cached by the engine) replaces :meth:`embed` of ``prompts``;
        ``noise`` (``[N, nz]``, e.g. a variation's noise near another picture's) replaces the seeds' noise.
        """
        if len(prompts) != len(seeds):
            raise ValueError(f"{len(prompts)} prompts but {len(seeds)} seeds")
        with torch.inference_mode():
            if sentences is None:
                sentences = self.embed(prompts)
            if noise is None:
                noise = seed_noise(seeds, self.config.nz)
            noise = noise.to(self.device)
            return self.netG(noise, sentences.to(self.device)).clamp(-1, 1).cpu()

    def draw_rows(self, prompts: Sequence[str], seeds: Sequence[int]) -> list[torch.Tensor]:
        """One :meth:`draw` per prompt, of that prompt with every seed: row ``r`` is ``[len(seeds), 3,
        H, W]`` (what sample and comparison grids show, one row per prompt, one column per seed)."""
        sentences = self.embed(prompts)
        n = len(seeds)
        return [self.draw([p] * n, seeds, sentences[r : r + 1].expand(n, -1)) for r, p in enumerate(prompts)]


def load_generator(folder: str | Path | None, device: str | torch.device = "cpu") -> LoadedGenerator:
    """Load a checkpoint folder written by :func:`save_checkpoint`, in eval mode on ``device``.

    ``folder=None`` gives a deterministic, randomly initialised 64x64 generator of the real
    architecture (version ``"random-init"``): a placeholder until a trained checkpoint is configured.
    """
    if folder is None:
        config = DFGANConfig(
            imsize=64, ngf=32, cond_dim=384, text_encoder="minilm", version=RANDOM_INIT_VERSION
        )
        # Seed a private generator state so the placeholder is the same in every process without
        # disturbing the caller's global RNG.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.seed)
            netG = build_generator(config)
        version = RANDOM_INIT_VERSION
    else:
        folder = Path(folder)
        config_path = folder / CONFIG_FILE
        if not config_path.is_file():
            raise FileNotFoundError(f"no {CONFIG_FILE} in DF-GAN checkpoint folder {folder}")
        data = json.loads(config_path.read_text())
        config = DFGANConfig.from_dict(data)
        netG = build_generator(config)
        netG.load_state_dict(load_file(folder / GENERATOR_FILE))
        version = str(data.get("version") or folder.name)
    netG.to(device).eval().requires_grad_(False)
    encoder = load_text_encoder(config.text_encoder, device)
    if encoder.dim != config.cond_dim:
        raise ValueError(
            f"text encoder {config.text_encoder} gives {encoder.dim}-d, model wants {config.cond_dim}"
        )
    return LoadedGenerator(netG=netG, config=config, version=version, text_encoder=encoder)
