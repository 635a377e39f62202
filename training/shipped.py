"""The models that ship with imaginebot (``training/shipped_models/``), and which one to load when
none is configured. Workers, evaluation and training all find them here."""

from __future__ import annotations

from pathlib import Path

SHIPPED_DIR = Path(__file__).resolve().parent / "shipped_models"
#: DF-GAN trained on the procedural shapes set (the ``dfgan`` engine's default).
SHIPPED_DFGAN = SHIPPED_DIR / "dfgan-shapes-64"
#: Our pixel-space diffusion model (the ``diffusion`` engine's default).
SHIPPED_DIFFUSION = SHIPPED_DIR / "diffusion-shapes-32"
#: The DAMSM encoders R-precision scores shapes captions with.
SHIPPED_DAMSM = SHIPPED_DIR / "damsm-shapes-64"


def default_dfgan_checkpoint(setting: str | None) -> str | None:
    """The DF-GAN checkpoint folder to load: ``setting`` when given, else the shipped checkpoint when
    present, else ``None`` (a randomly initialised placeholder generator)."""
    if setting:
        return setting
    if (SHIPPED_DFGAN / "config.json").is_file():
        return str(SHIPPED_DFGAN)
    return None
