"""The ``upscale`` engine behind the Upscale ×2 button: one picture of an earlier job, twice as large.

With ``IMAGINEBOT_UPSCALER`` naming a diffusers upscaler (a local folder, or a hub id already in the
local Hugging Face cache; nothing is downloaded), the upscaler redraws the picture at the larger size
from the job's prompt: ``StableDiffusionUpscalePipeline`` (the ×4 upscaler; its result is resized to
exactly ×2) or ``StableDiffusionLatentUpscalePipeline`` (×2). Without one, the picture is resized ×2
with Lanczos, and the engine's version says so: "plain resize ×2, no upscaler configured".
"""

from __future__ import annotations

import inspect
import logging
import threading
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from training.seeds import seed_generators
from worker.engines.base import (
    EngineInfo,
    GenerationCancelled,
    GenerationRequest,
    ProgressCallback,
    resolve_device,
)

log = logging.getLogger(__name__)

#: How much larger the result is than the picture, per side.
FACTOR = 2
#: The version (and so the paired image's label) of the plain resize.
PLAIN_VERSION = "plain resize ×2, no upscaler configured"
#: Diffusers pipelines this engine can run, and how much larger each one draws.
UPSCALER_FACTORS = {"StableDiffusionUpscalePipeline": 4, "StableDiffusionLatentUpscalePipeline": 2}
#: A longer source side is resized down to this before the upscaler runs (a ×4 upscaler's memory grows
#: with the square of its output); the result is still exactly ×2 of the source.
MAX_UPSCALER_INPUT = 768


class UpscalerNotAvailable(RuntimeError):
    """``IMAGINEBOT_UPSCALER`` names no usable diffusers upscaler on this machine."""


def doubled(image: Image.Image, source: Image.Image | None = None) -> Image.Image:
    """``image`` resized (Lanczos) to exactly twice the width and height of ``source`` (default: of
    ``image`` itself)."""
    base = source or image
    size = (base.width * FACTOR, base.height * FACTOR)
    return image if image.size == size else image.resize(size, Image.Resampling.LANCZOS)


def _sources(request: GenerationRequest) -> Image.Image:
    """The request's picture (an upscale job always has one)."""
    if request.image is None:
        raise ValueError("an upscale needs a picture to start from (the job has no image)")
    return request.image.convert("RGB")


class PlainUpscaler:
    """No upscaler configured: a plain Lanczos resize ×2, labelled as such."""

    def __init__(self) -> None:
        self.info = EngineInfo(name="upscale", version=PLAIN_VERSION, extra={"method": "lanczos"})

    def generate(
        self, requests: list[GenerationRequest], progress: ProgressCallback | None = None
    ) -> list[list[Image.Image]]:
        """Each request's picture ×2, once per seed (the resize has no randomness)."""
        if progress is not None and progress(0, 1):
            raise GenerationCancelled()
        out = [[doubled(_sources(req)) for _ in req.seeds] for req in requests]
        if progress is not None:
            progress(1, 1)
        return out


class _Stop(Exception):
    """Raised from the step callback to stop a cancelled run."""


class DiffusersUpscaler:
    """A diffusers upscaler pipeline, loaded once from a local folder (or the local hub cache)."""

    def __init__(self, model: str, device: str = "auto", dtype: str = "auto") -> None:
        """Load the upscaler.

        Raises:
            UpscalerNotAvailable: ``model`` is not a local folder nor in the local hub cache, or is not
                one of the upscaler pipelines this engine runs.
        """
        from diffusers import DiffusionPipeline

        from worker.engines.diffusion import resolve_dtype

        folder = Path(model).expanduser()
        source = str(folder) if folder.is_dir() else model
        try:
            index = dict(DiffusionPipeline.load_config(source, local_files_only=True))
        except (OSError, ValueError) as exc:
            raise UpscalerNotAvailable(
                f"IMAGINEBOT_UPSCALER={model!r} is neither a diffusers folder nor in the local Hugging Face "
                f"cache (imaginebot never downloads models; e.g. `hf download {model} --local-dir DIR`)"
            ) from exc
        class_name = str(index.get("_class_name", ""))
        if class_name not in UPSCALER_FACTORS:
            raise UpscalerNotAvailable(
                f"IMAGINEBOT_UPSCALER={model!r} is a {class_name or 'unknown'} pipeline, not one of "
                f"{', '.join(UPSCALER_FACTORS)}"
            )
        import diffusers

        self.device = resolve_device(device)
        kwargs: dict[str, Any] = {
            "local_files_only": True,
            "dtype": resolve_dtype(dtype, self.device, class_name),
        }
        if (index.get("safety_checker") or [None])[0]:
            kwargs["safety_checker"] = None  # the picture was checked when it was drawn
        try:
            self.pipe = getattr(diffusers, class_name).from_pretrained(source, **kwargs)
        except OSError as exc:
            raise UpscalerNotAvailable(f"IMAGINEBOT_UPSCALER={model!r} is incomplete ({exc})") from exc
        self.pipe.set_progress_bar_config(disable=True)
        self.pipe.to(self.device)
        self.factor = UPSCALER_FACTORS[class_name]
        self._lock = threading.Lock()
        name = folder.name if folder.is_dir() else model
        method = f"{class_name} ×{self.factor}" + ("" if self.factor == FACTOR else f", resized to ×{FACTOR}")
        self.info = EngineInfo(name="upscale", version=name, extra={"method": method, "device": self.device})

    def generate(
        self, requests: list[GenerationRequest], progress: ProgressCallback | None = None
    ) -> list[list[Image.Image]]:
        """Each request's picture redrawn ×2 from its prompt, once per seed (``steps`` denoising steps).

        Raises:
            GenerationCancelled: ``progress`` returned True.
        """
        total = sum(req.steps * len(req.seeds) for req in requests)
        done = 0
        out: list[list[Image.Image]] = []
        with self._lock:
            for req in requests:
                images = []
                for seed in req.seeds:
                    images.append(self._upscale(req, seed, progress, done, total))
                    done += req.steps
                out.append(images)
        return out

    def _upscale(
        self, req: GenerationRequest, seed: int, progress: ProgressCallback | None, done: int, total: int
    ) -> Image.Image:
        """One picture through the pipeline, resized to exactly ×2 of the source."""
        source = _sources(req)
        start = source
        if max(source.size) > MAX_UPSCALER_INPUT:
            scale = MAX_UPSCALER_INPUT / max(source.size)
            start = source.resize(
                (round(source.width * scale), round(source.height * scale)), Image.Resampling.LANCZOS
            )

        def on_step(step: int, *_: Any) -> None:
            if progress is not None and progress(done + min(step + 1, req.steps), total):
                raise _Stop

        params = set(inspect.signature(self.pipe.__call__).parameters)
        kwargs: dict[str, Any] = {
            "prompt": req.prompt,
            "image": start,
            "num_inference_steps": req.steps,
            "generator": seed_generators([seed])[0],
            "output_type": "pil",
        }
        if req.negative_prompt and "negative_prompt" in params:
            kwargs["negative_prompt"] = req.negative_prompt
        if req.guidance_scale is not None:
            kwargs["guidance_scale"] = req.guidance_scale
        if "callback" in params:
            kwargs.update(callback=on_step, callback_steps=1)
        try:
            with torch.inference_mode():
                image = self.pipe(**kwargs).images[0]
        except _Stop:
            raise GenerationCancelled(f"cancelled during the upscale of seed {seed}") from None
        return doubled(image, source)


def load_upscaler(
    model: str | None, device: str = "auto", dtype: str = "auto"
) -> PlainUpscaler | DiffusersUpscaler:
    """The upscale engine: the configured diffusers upscaler, or the plain resize when none is set.

    Raises:
        UpscalerNotAvailable: an upscaler is configured but cannot be loaded (said plainly, not
            silently replaced by the resize).
    """
    if not model:
        return PlainUpscaler()
    return DiffusersUpscaler(model, device, dtype)
