"""Settings of the small pixel-space diffusion model and its training run."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from training.config_base import TrainingConfig


@dataclass
class DiffusionConfig(TrainingConfig):
    """Model shape and training hyper-parameters; saved as ``train_config.json`` beside a run.

    The defaults are the shipped ``diffusion-shapes-32`` model: a 4.3 M-parameter UNet at 32×32 with
    attention only at the 8×8 level (attention at 16×16 doubled the CPU step time for no visible gain).
    """

    imsize: int = 32
    #: Datasets are rendered at this side and downsampled (antialiased) to ``imsize``.
    source_size: int = 64
    block_out_channels: tuple[int, ...] = (32, 64, 128)
    #: Which levels (same length as ``block_out_channels``) have cross-attention transformer blocks.
    attention_levels: tuple[bool, ...] = (False, False, True)
    layers_per_block: int = 1
    attention_head_dim: int = 8
    norm_num_groups: int = 16
    text_encoder: str = "minilm"
    cond_dim: int = 384
    num_train_timesteps: int = 1000
    beta_schedule: str = "squaredcos_cap_v2"
    #: Fraction of captions replaced by the zero vector, so the model also learns p(x) for guidance.
    cond_dropout: float = 0.1
    #: Guidance scale the saved pipeline uses when a caller names none (its ``default_guidance``).
    guidance: float = 2.0
    batch_size: int = 32
    lr: float = 3e-4
    warmup_steps: int = 200
    weight_decay: float = 0.0
    ema_decay: float = 0.999
    steps: int = 6000
    seed: int = 0
    checkpoint_every: int = 250
    #: bf16 autocast for the UNet's forward pass on CUDA, and on a CPU with native bf16
    #: (AVX512-BF16 / AMX, ``training/precision.py``); the loss is always float32. CPU off by default:
    #: it changes a step's numbers by bf16 rounding (x1.3 faster, ``benchmarks/cpu_training_speed.py``).
    bf16_on_gpu: bool = True
    bf16_on_cpu: bool = False
    sample_prompts: list[str] = field(default_factory=list)
    version: str = "diffusion-shapes-32-v1"

    def unet_kwargs(self) -> dict[str, Any]:
        """Arguments for ``diffusers.UNet2DConditionModel``."""
        n = len(self.block_out_channels)
        if len(self.attention_levels) != n:
            raise ValueError("attention_levels must have one entry per block_out_channels entry")
        down = ["CrossAttnDownBlock2D" if a else "DownBlock2D" for a in self.attention_levels]
        up = ["CrossAttnUpBlock2D" if a else "UpBlock2D" for a in reversed(self.attention_levels)]
        return {
            "sample_size": self.imsize,
            "in_channels": 3,
            "out_channels": 3,
            "block_out_channels": tuple(self.block_out_channels),
            "down_block_types": tuple(down),
            "up_block_types": tuple(up),
            "layers_per_block": self.layers_per_block,
            "cross_attention_dim": self.cond_dim,
            "attention_head_dim": self.attention_head_dim,
            "norm_num_groups": self.norm_num_groups,
            "class_embed_type": "projection",
            "projection_class_embeddings_input_dim": self.cond_dim,
        }
