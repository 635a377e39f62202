"""The in-house diffusion model: the tiny placeholder pipeline shipped as the default diffusion engine."""

from training.diffusion.tiny import TINY_VERSION, build_tiny_pipeline, ensure_tiny_pipeline

__all__ = ["TINY_VERSION", "build_tiny_pipeline", "ensure_tiny_pipeline"]
