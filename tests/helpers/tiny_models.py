"""Tiny diffusion models built from configs for the engine tests (nothing is downloaded): our
pixel-space pipeline, the tiny Stable Diffusion pipeline with a safety checker that flags everything,
a tiny LoRA for the tiny Stable Diffusion UNet, and a tiny ×4 upscaler pipeline."""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers import UNet2DConditionModel

from training.diffusion.config import DiffusionConfig
from training.diffusion.trainer import save_pipeline

#: A pixel-space model as small as a UNet2DConditionModel gets: 16 px, two levels, attention at the second.
PIXEL_CONFIG = DiffusionConfig(
    imsize=16,
    block_out_channels=(8, 16),
    attention_levels=(False, True),
    norm_num_groups=4,
    attention_head_dim=4,
    version="pixel-tiny-test",
)


def build_pixel_pipeline(folder: Path, seed: int = 0) -> Path:
    """Our pipeline class around a random tiny UNet, saved the way the trainer saves it."""
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(**PIXEL_CONFIG.unet_kwargs())
    save_pipeline(PIXEL_CONFIG, unet, folder, {"step": 0})
    return folder


def build_checked_pipeline(tiny_folder: Path, out: Path) -> Path:
    """The tiny SD pipeline plus a tiny real ``StableDiffusionSafetyChecker`` whose concept
    thresholds are set so that it flags every image (what a real checker does to a flagged one)."""
    from diffusers import StableDiffusionPipeline
    from diffusers.pipelines.stable_diffusion.safety_checker import StableDiffusionSafetyChecker
    from transformers import CLIPConfig, CLIPImageProcessor

    tower = {"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2}
    config = CLIPConfig(
        text_config=tower,
        vision_config={**tower, "image_size": 32, "patch_size": 8},
        projection_dim=8,
    )
    torch.manual_seed(0)
    checker = StableDiffusionSafetyChecker(config)
    with torch.no_grad():
        checker.concept_embeds_weights.fill_(-10.0)  # every cosine score is above its threshold
    processor = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    pipe = StableDiffusionPipeline.from_pretrained(str(tiny_folder), local_files_only=True)
    pipe.register_modules(safety_checker=checker, feature_extractor=processor)
    pipe.register_to_config(requires_safety_checker=True)
    pipe.save_pretrained(out, safe_serialization=True)
    return out


def write_tiny_lora(tiny_folder: Path, out: Path, rank: int = 4, scale: float = 0.5, seed: int = 0) -> Path:
    """A LoRA for the tiny SD UNet's attention projections, in the layout diffusers'
    ``save_lora_weights`` writes (``unet.<module>.lora_A.weight`` / ``lora_B.weight``), written
    directly with safetensors."""
    from safetensors.torch import save_file

    unet = UNet2DConditionModel.from_pretrained(str(tiny_folder / "unet"), local_files_only=True)
    generator = torch.Generator().manual_seed(seed)
    state: dict[str, torch.Tensor] = {}
    for name, module in unet.named_modules():
        if isinstance(module, torch.nn.Linear) and ".attn" in name:
            a = torch.randn(rank, module.in_features, generator=generator) * scale
            b = torch.randn(module.out_features, rank, generator=generator) * scale
            state[f"unet.{name}.lora_A.weight"] = a.contiguous()
            state[f"unet.{name}.lora_B.weight"] = b.contiguous()
    assert state, "the tiny UNet has no attention projections"
    out.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(out))
    return out


def build_tiny_upscaler(tiny_folder: Path, out: Path, seed: int = 0) -> Path:
    """A tiny ×4 ``StableDiffusionUpscalePipeline`` with random weights, built from configs and saved to
    ``out``: the layout of ``stabilityai/stable-diffusion-x4-upscaler`` (a UNet over 4 latent + 3 picture
    channels with the noise level as class label, a three-block VAE that draws 4× its latents,
    v-prediction), with the tiny SD pipeline's tokenizer and text encoder."""
    from diffusers import (
        AutoencoderKL,
        DDIMScheduler,
        DDPMScheduler,
        StableDiffusionUpscalePipeline,
    )
    from transformers import CLIPTextModel, CLIPTokenizer

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        # The tiny SD UNet, taking the low-resolution picture's 3 channels beside the latents and the
        # noise level as its class label.
        config = dict(UNet2DConditionModel.load_config(str(tiny_folder / "unet"), local_files_only=True))
        unet = UNet2DConditionModel.from_config({**config, "in_channels": 7, "num_class_embeds": 1000})
        vae = AutoencoderKL(
            in_channels=3,
            out_channels=3,
            down_block_types=("DownEncoderBlock2D",) * 3,
            up_block_types=("UpDecoderBlock2D",) * 3,
            block_out_channels=(32, 64, 64),
            layers_per_block=1,
            latent_channels=4,
            norm_num_groups=32,
            scaling_factor=0.08333,
        )
    pipe = StableDiffusionUpscalePipeline(
        vae=vae,
        text_encoder=CLIPTextModel.from_pretrained(str(tiny_folder / "text_encoder"), local_files_only=True),
        tokenizer=CLIPTokenizer.from_pretrained(str(tiny_folder / "tokenizer"), local_files_only=True),
        unet=unet,
        low_res_scheduler=DDPMScheduler(num_train_timesteps=1000),
        scheduler=DDIMScheduler(
            num_train_timesteps=1000, beta_schedule="scaled_linear", prediction_type="v_prediction"
        ),
        max_noise_level=350,
    )
    pipe.save_pretrained(out, safe_serialization=True)
    return out
