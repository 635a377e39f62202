"""A tiny, randomly initialised but real Stable Diffusion pipeline built from configs alone.

It is the default diffusion model: it needs no download, loads through the same
``from_pretrained(folder)`` path as a real checkpoint, and draws 64×64 images on a CPU in well under a
second. Its pictures are noise-like (the weights are random); it exists so the whole system runs and is
tested end to end without any model from the hub.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

#: Written to ``imaginebot.json`` in the folder; the engine label shows it. Bump when the build changes.
TINY_VERSION = "diffusion-tiny-random-v1"
#: Folder under ``<data_dir>/models`` that :func:`ensure_tiny_pipeline` fills.
TINY_DIR_NAME = "diffusion-tiny"
#: The file beside the pipeline's own files that says which imaginebot model this folder holds.
META_FILE = "imaginebot.json"

_BOS = "<|startoftext|>"
_EOS = "<|endoftext|>"
# Words likely in prompts get merges (mostly one token each; a shorter word's merge can split a longer
# one, which is harmless for a random model); anything else falls back to byte-level characters, so
# every prompt tokenizes.
_COMMON_WORDS = (
    "a an the of and with on in at to by for from photo picture painting drawing image "
    "red green blue yellow orange purple pink brown black white gray grey "
    "small big large tiny little bright dark "
    "cat dog bird fish horse cow flower tree sky sea sun moon car house person man woman "
    "circle square triangle star heart shape shapes emoji face smiling background"
).split()
_MAX_TOKENS = 77  # CLIP's context length; the pipeline pads every prompt to this.


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's byte → printable character table that byte-level BPE vocabularies are written in."""
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    chars = printable[:]
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + extra)
            extra += 1
    return dict(zip(printable, (chr(c) for c in chars), strict=True))


def make_clip_vocab() -> tuple[dict[str, int], list[str]]:
    """Build a small CLIP-style BPE vocabulary and merge list.

    Layout follows CLIP's own: the 256 byte characters, the same with the end-of-word marker ``</w>``,
    one entry per merge, then the two special tokens.
    """
    byte_chars = list(_bytes_to_unicode().values())
    tokens = byte_chars + [c + "</w>" for c in byte_chars]
    merges: list[str] = []
    for word in _COMMON_WORDS:
        parts = list(word[:-1]) + [word[-1] + "</w>"]
        # Merge left to right so each word is a chain of merges ending in the whole word.
        while len(parts) > 1:
            merge = f"{parts[0]} {parts[1]}"
            merged = parts[0] + parts[1]
            if merge not in merges:
                merges.append(merge)
                tokens.append(merged)
            parts = [merged, *parts[2:]]
    tokens += [_BOS, _EOS]
    vocab: dict[str, int] = {}
    for token in tokens:
        vocab.setdefault(token, len(vocab))
    return vocab, merges


def _build_tokenizer(work_dir: Path) -> CLIPTokenizer:
    """Write vocab.json/merges.txt and load them the way any CLIP tokenizer folder is loaded."""
    from transformers import CLIPTokenizer

    vocab, merges = make_clip_vocab()
    work_dir.mkdir(parents=True, exist_ok=True)
    (work_dir / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    (work_dir / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
    return CLIPTokenizer(
        vocab=str(work_dir / "vocab.json"),
        merges=str(work_dir / "merges.txt"),
        model_max_length=_MAX_TOKENS,
    )


def build_tiny_pipeline(out_dir: Path, seed: int = 0, sample_size: int = 64) -> Path:
    """Build the tiny random Stable Diffusion pipeline and save it to ``out_dir``.

    Args:
        out_dir: Folder to write (created; existing files with the same names are overwritten).
        seed: Seeds the random weights; the same seed gives byte-identical weights.
        sample_size: Default image side in pixels (the pipeline's default height/width).

    Returns:
        ``out_dir``, now a diffusers folder loadable with ``from_pretrained(out_dir)``.
    """
    from diffusers import DPMSolverMultistepScheduler, StableDiffusionPipeline

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tokenizer = _build_tokenizer(out_dir / "tokenizer")
    # fork_rng keeps the caller's global RNG untouched while we seed the weight initialisers
    # (in this order: UNet, VAE, text encoder).
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        unet = _tiny_unet(sample_size)
        vae = _tiny_vae(sample_size)
        text_encoder = _tiny_text_encoder(tokenizer)
    scheduler = DPMSolverMultistepScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        num_train_timesteps=1000,
        steps_offset=1,
    )
    pipe = StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.save_pretrained(out_dir, safe_serialization=True)
    (out_dir / META_FILE).write_text(json.dumps({"version": TINY_VERSION}) + "\n", encoding="utf-8")
    return out_dir


#: Two VAE blocks: latents are half the image side (64 px -> 32), small enough for a fast CPU UNet.
_VAE_SCALE = 2


def _tiny_unet(sample_size: int) -> UNet2DConditionModel:
    """A two-level latent UNet with cross-attention at the lower level only."""
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(
        sample_size=sample_size // _VAE_SCALE,
        in_channels=4,
        out_channels=4,
        block_out_channels=(32, 64),
        layers_per_block=1,
        # Attention only at the lower resolution: at 256 px full-resolution self-attention over
        # 128×128 latents would need gigabytes on a CPU.
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=32,
        attention_head_dim=8,
        norm_num_groups=32,
    )


def _tiny_vae(sample_size: int) -> AutoencoderKL:
    """A two-block VAE with 4 latent channels (downscales by :data:`_VAE_SCALE`)."""
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        block_out_channels=(32, 64),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=32,
        sample_size=sample_size,
    )


def _tiny_text_encoder(tokenizer: CLIPTokenizer) -> CLIPTextModel:
    """A two-layer, 32-wide CLIP text model over ``tokenizer``'s vocabulary."""
    from transformers import CLIPTextConfig, CLIPTextModel

    return CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(tokenizer),
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            max_position_embeddings=_MAX_TOKENS,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
            projection_dim=32,
        )
    )


def ensure_tiny_pipeline(data_dir: Path) -> Path:
    """Return ``<data_dir>/models/diffusion-tiny``, building it first if it is not there yet.

    The build goes to a private temporary folder that is renamed into place, so a reader never sees a
    half-written model and two processes racing both end up with the same complete folder.
    """
    models = Path(data_dir) / "models"
    target = models / TINY_DIR_NAME
    if (target / META_FILE).is_file():
        return target
    models.mkdir(parents=True, exist_ok=True)
    tmp = models / f".{TINY_DIR_NAME}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        build_tiny_pipeline(tmp)
        try:
            os.rename(tmp, target)
        except OSError:
            # Another process renamed its copy first (target now exists and is not empty): use that one.
            if not (target / META_FILE).is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target
