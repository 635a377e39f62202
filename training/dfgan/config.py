"""Everything that defines a DF-GAN run, in one JSON-serialisable object."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from training.config_base import TrainingConfig
from training.dfgan.model import NOISE_DIM


@dataclass
class DFGANConfig(TrainingConfig):
    """Architecture, text encoder and optimisation settings of one DF-GAN model.

    The defaults follow the DF-GAN paper (hinge loss, MA-GP k=2 p=6, Adam lr 1e-4 / 4e-4,
    betas (0, 0.9)) with the 384-d MiniLM sentence encoder in place of the paper's DAMSM LSTM.
    """

    imsize: int = 64
    ngf: int = 32
    ndf: int = 32
    nz: int = NOISE_DIM
    cond_dim: int = 384
    text_encoder: str = "minilm"
    max_caption_tokens: int = 0  # 0 = no truncation; > 0 keeps the first N word tokens
    cond_scale: float = 1.0  # sentence vectors are multiplied by this (see dfgan/conditioning.py)
    loss: Literal["hinge", "bce"] = "hinge"
    lr_g: float = 1e-4
    lr_d: float = 4e-4
    betas: tuple[float, float] = (0.0, 0.9)
    batch_size: int = 32
    epochs: int = 100
    ema_decay: float = 0.999  # 0 disables the EMA generator
    # Early steps' EMA follows the generator closely (decay ramps up to ema_decay). A fine-tune turns
    # it off: its EMA starts as the pretrained weights and should move away from them slowly.
    ema_warmup: bool = True
    gp_k: float = 2.0
    gp_p: float = 6.0
    seed: int = 0
    checkpoint_every: int = 500  # optimiser steps
    # Speed only; none of these changes what a step computes beyond float rounding
    # (measured in benchmarks/dfgan_train_step.py, figures in docs/benchmarks.md).
    channels_last: bool = True  # NHWC activations: faster oneDNN / cuDNN convolutions
    compile_generator: bool = False  # torch.compile the generator (D cannot be: MA-GP double backward)
    bf16_on_gpu: bool = True  # bf16 autocast for the forward passes on CUDA
    # bf16 autocast on a CPU with native bf16 (AVX512-BF16 / AMX; training/precision.py), else float32.
    # Off by default: it changes a step's numbers by bf16 rounding (x1.6 faster, benchmarks/).
    bf16_on_cpu: bool = False
    sample_prompts: list[str] = field(default_factory=list)
    version: str = ""


def original_project_config() -> DFGANConfig:
    """The settings of the project this one replaces: BCE loss, 256-d text embedding, 64x64,
    batch 64, captions cut to 15 tokens, Adam lr 2e-4 betas (0.5, 0.999), 100 epochs.

    Its 256-d embedding came from a text encoder we do not ship; ``minilm-256`` (MiniLM followed by
    a fixed projection to 256 dimensions) stands in for it.
    """
    return DFGANConfig(
        imsize=64,
        cond_dim=256,
        text_encoder="minilm-256",
        max_caption_tokens=15,
        loss="bce",
        lr_g=2e-4,
        lr_d=2e-4,
        betas=(0.5, 0.999),
        batch_size=64,
        epochs=100,
    )


#: Named presets for ``--config``.
PRESETS = {"default": DFGANConfig, "original": original_project_config}
