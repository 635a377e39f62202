"""The diffusion engine: any diffusers text-to-image pipeline (SD 1.x, SDXL, Flux, or our shipped model).

Nothing is downloaded here. A model is a local diffusers folder, or a hub id already in the local
Hugging Face cache; anything else raises :class:`ModelNotAvailable` with the command that fetches it.
"""

from __future__ import annotations

import inspect
import json
import logging
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from core.compose import WITHHELD
from training.diffusion.pipeline import PIPELINE_CLASS_NAME
from training.diffusion.tiny import META_FILE, ensure_tiny_pipeline
from training.seeds import seed_generators
from training.shipped import SHIPPED_DIFFUSION
from worker.engines.base import (
    EngineInfo,
    GenerationCancelled,
    GenerationRequest,
    ProgressCallback,
    resolve_device,
)

log = logging.getLogger(__name__)

#: The diffusion model that ships with the project (trained on ``shapes``), used when none is configured.
SHIPPED_PIPELINE = SHIPPED_DIFFUSION

#: Largest image side we ask any pipeline for; beyond this a single image can exhaust a GPU.
MAX_SIZE = 2048

_DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "float16": torch.float16,
    "fp16": torch.float16,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
}


_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?")


class ModelNotAvailable(RuntimeError):
    """The configured diffusion model is neither a usable local folder nor in the local hub cache."""


@dataclass(frozen=True)
class _Call:
    """One pipeline call: image ``i`` shows ``prompts[i]`` from ``seeds[i]``, all with the same settings."""

    prompts: list[str]
    seeds: list[int]
    steps: int
    side: int
    negative: str | None
    guidance: float | None


class _StopRun(Exception):
    """Raised from the step callback by pipelines that have no ``interrupt`` support."""


def resolve_dtype(dtype: str, device: str, pipeline_class: str) -> torch.dtype:
    """Pick the weight dtype: fp32 on CPU (half precision is slow or unsupported there), bf16 for Flux
    (it overflows in fp16), fp16 for other pipelines on a GPU. An explicit ``dtype`` wins."""
    if dtype != "auto":
        try:
            return _DTYPES[dtype]
        except KeyError:
            raise ValueError(f"unknown dtype {dtype!r}; use auto, {', '.join(_DTYPES)}") from None
    if not device.startswith("cuda"):
        return torch.float32
    return torch.bfloat16 if pipeline_class.startswith("Flux") else torch.float16


def _download_hint(model: str, data_dir: Path) -> str:
    folder = Path(data_dir) / "models" / re.sub(r"[^A-Za-z0-9._-]+", "--", model)
    return (
        f"Diffusion model {model!r} is not a local folder and is not in the local Hugging Face cache; "
        "imaginebot never downloads models at run time. Download it once on a machine with network "
        f"access:\n    hf download {model} --local-dir {folder}\n"
        f"(older huggingface_hub: huggingface-cli download {model} --local-dir {folder})\n"
        f"then set IMAGINEBOT_DIFFUSION_MODEL={folder}, or unset it to use the shipped model."
    )


def _read_model_index(source: str, folder: Path | None, data_dir: Path) -> dict[str, Any]:
    """The pipeline's ``model_index.json`` (from the folder or the local hub cache only).

    Raises:
        ModelNotAvailable: there is none (with the download hint for a hub id).
    """
    from diffusers import DiffusionPipeline

    try:
        return dict(DiffusionPipeline.load_config(source, local_files_only=True))
    except (OSError, ValueError) as exc:
        if folder is not None:
            raise ModelNotAvailable(
                f"{folder} is not a diffusers pipeline folder (no readable model_index.json)"
            ) from exc
        raise ModelNotAvailable(_download_hint(source, data_dir)) from exc


def _load_pipeline(
    source: str, folder: Path | None, data_dir: Path, pipeline_class: str, kwargs: dict[str, Any]
) -> Any:
    """Load the pipeline with ``from_pretrained(source, **kwargs)``: our own pixel-space model by its
    class (it is not one of AutoPipeline's), anything else through ``AutoPipelineForText2Image``.

    Raises:
        ModelNotAvailable: some component's files are missing (model_index.json was cached, they were not).
    """
    from diffusers import AutoPipelineForText2Image

    loader: Any = AutoPipelineForText2Image
    if pipeline_class == PIPELINE_CLASS_NAME:
        from training.diffusion.pipeline import PixelDiffusionPipeline

        loader = PixelDiffusionPipeline
    try:
        return loader.from_pretrained(source, **kwargs)
    except OSError as exc:
        hint = f"{folder} is incomplete" if folder is not None else _download_hint(source, data_dir)
        raise ModelNotAvailable(f"{hint}\n({exc})") from exc


class DiffusionEngine:
    """A diffusers text-to-image pipeline, loaded once and used by one worker thread at a time."""

    def __init__(
        self,
        model: str | None,
        data_dir: Path,
        device: str = "auto",
        dtype: str = "auto",
        attention_slicing: bool = False,
        cpu_offload: bool = False,
        safety_checker: bool = True,
    ) -> None:
        """Load the pipeline.

        Args:
            model: A diffusers folder, a hub id present in the local cache, or None for the shipped
                model (or, when that is absent, a random tiny one built under ``data_dir/models``).
            data_dir: Where the tiny model lives; also named in the download hint.
            device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
            dtype: ``auto`` or a dtype name (``float16``, ``bfloat16``, ``float32``).
            attention_slicing: Trade speed for memory on small GPUs.
            cpu_offload: Keep sub-models on the CPU and move each to the GPU only while it runs.
            safety_checker: Run the safety checker the model folder provides (SD 1.x ships one: it
                blacks out images it flags). False loads the pipeline without it.

        Raises:
            ModelNotAvailable: the model is not a diffusers folder and not in the local hub cache.
        """
        source, folder = self._locate(model, Path(data_dir))
        index = _read_model_index(source, folder, Path(data_dir))
        pipeline_class = str(index.get("_class_name", ""))
        self.device = resolve_device(device)
        self.dtype = resolve_dtype(dtype, self.device, pipeline_class)
        has_checker = bool((index.get("safety_checker") or [None])[0])
        kwargs: dict[str, Any] = {"local_files_only": True, "dtype": self.dtype}
        if has_checker and not safety_checker:
            kwargs.update(safety_checker=None, requires_safety_checker=False)
        pipe = _load_pipeline(source, folder, Path(data_dir), pipeline_class, kwargs)
        pipe.set_progress_bar_config(disable=True)
        if attention_slicing:
            pipe.enable_attention_slicing()
        if cpu_offload and self.device.startswith("cuda"):
            pipe.enable_model_cpu_offload(device=self.device)
        else:
            pipe.to(self.device)
        self.pipe = pipe
        self._call_params = set(inspect.signature(pipe.__call__).parameters)
        # Flux packs 2×2 latent patches, so its sides must be multiples of 16; others need multiples of 8.
        scale = int(getattr(pipe, "vae_scale_factor", 8))
        self.size_multiple = max(8, scale * 2 if pipeline_class.startswith("Flux") else scale)
        self._lock = threading.Lock()
        self.safety_checker = has_checker and safety_checker
        #: How many images the model's safety checker blacked out since the engine loaded.
        self.flagged_images = 0
        self.info = EngineInfo(
            name="diffusion",
            version=self._version(source, folder),
            extra={"pipeline": type(pipe).__name__, "device": self.device, "dtype": str(self.dtype)},
        )

    @staticmethod
    def _locate(model: str | None, data_dir: Path) -> tuple[str, Path | None]:
        """Return (what to pass to from_pretrained, the local folder or None for a hub id)."""
        if model is None:
            if (SHIPPED_PIPELINE / "model_index.json").is_file():
                return str(SHIPPED_PIPELINE), SHIPPED_PIPELINE
            folder = ensure_tiny_pipeline(data_dir)
            return str(folder), folder
        path = Path(model).expanduser()
        if path.is_dir():
            return str(path), path
        if not _HUB_ID.fullmatch(model):
            # "org/name" or "name" is a hub id; anything else (./x, /x, a/b/c, ~/x) meant a folder.
            raise ModelNotAvailable(
                f"diffusion model folder {path} does not exist; set IMAGINEBOT_DIFFUSION_MODEL to a "
                "diffusers pipeline folder (the one with model_index.json) or unset it for the shipped model"
            )
        return model, None

    @staticmethod
    def _version(source: str, folder: Path | None) -> str:
        if folder is None:
            return source
        meta = folder / META_FILE
        if meta.is_file():
            try:
                version = json.loads(meta.read_text(encoding="utf-8")).get("version")
            except (OSError, ValueError, AttributeError):
                version = None
            if isinstance(version, str) and version:
                return version
        return folder.name

    def image_size(self, size: int) -> int:
        """The side actually drawn for a requested ``size``: nearest allowed multiple, within limits."""
        m = self.size_multiple
        side = max(m, (size + m // 2) // m * m)
        return min(side, MAX_SIZE - MAX_SIZE % m)

    def generate(
        self, requests: list[GenerationRequest], progress: ProgressCallback | None = None
    ) -> list[list[Image.Image]]:
        """Draw every request, one pipeline call per group of requests with the same settings.

        Each image gets its own CPU generator seeded with its seed, so a seed gives the same starting
        noise on any device and in any batch. ``progress`` sees steps summed over all calls.

        Raises:
            GenerationCancelled: ``progress`` returned True; the run stopped at that step.
        """
        groups: dict[tuple[int, int, str | None, float | None], list[int]] = {}
        for i, req in enumerate(requests):
            if req.seeds:
                key = (req.steps, self.image_size(req.size), req.negative_prompt, req.guidance_scale)
                groups.setdefault(key, []).append(i)
        total = sum(steps for steps, *_ in groups)
        results: list[list[Image.Image]] = [[] for _ in requests]
        done = 0
        with self._lock:
            for (steps, side, negative, guidance), members in groups.items():
                prompts = [requests[i].prompt for i in members for _ in requests[i].seeds]
                seeds = [s for i in members for s in requests[i].seeds]
                call = _Call(prompts, seeds, steps, side, negative, guidance)
                images = self._run(call, progress, done, total)
                done += steps
                for i in members:
                    n = len(requests[i].seeds)
                    results[i], images = images[:n], images[n:]
        return results

    def _run(
        self, call: _Call, progress: ProgressCallback | None, done: int, total: int
    ) -> list[Image.Image]:
        """One pipeline call; raises GenerationCancelled when ``progress`` asks to stop."""
        cancelled = False
        stopped_at = 0
        can_interrupt = isinstance(getattr(type(self.pipe), "interrupt", None), property)

        def on_step_end(pipe: Any, step: int, timestep: Any, tensors: dict[str, Any]) -> dict[str, Any]:
            nonlocal cancelled, stopped_at
            # Some schedulers (Heun, DPM2) run more model steps than asked; scale back to the user's steps.
            n_timesteps = int(getattr(pipe, "_num_timesteps", 0) or call.steps)
            current = done + max(1, round((step + 1) * call.steps / n_timesteps))
            if progress is not None and progress(current, total):
                cancelled, stopped_at = True, current
                if can_interrupt:
                    # The pipeline skips the remaining steps; it still decodes, which we discard.
                    pipe._interrupt = True
                else:
                    raise _StopRun
            return tensors

        kwargs = self._call_kwargs(call)
        if "callback_on_step_end" in self._call_params:
            kwargs["callback_on_step_end"] = on_step_end
        try:
            with torch.inference_mode():
                output = self.pipe(**kwargs)
        except _StopRun:
            pass
        if cancelled:
            raise GenerationCancelled(f"cancelled at step {stopped_at} of {total}")
        return self._withhold_flagged(output)

    def _call_kwargs(self, call: _Call) -> dict[str, Any]:
        """The pipeline call's arguments: one CPU generator per seed, and guidance and the negative
        prompt only where the pipeline takes them."""
        kwargs: dict[str, Any] = {
            "prompt": call.prompts,
            "num_inference_steps": call.steps,
            "height": call.side,
            "width": call.side,
            "generator": seed_generators(call.seeds),
            "output_type": "pil",
        }
        if call.guidance is not None and "guidance_scale" in self._call_params:
            kwargs["guidance_scale"] = call.guidance
        if call.negative and "negative_prompt" in self._call_params:
            kwargs["negative_prompt"] = [call.negative] * len(call.prompts)
        return kwargs

    def _withhold_flagged(self, output: Any) -> list[Image.Image]:
        """The output's images, each one the safety checker blacked out marked as withheld (and counted)."""
        images = list(output.images)
        flagged = getattr(output, "nsfw_content_detected", None) or []
        for image, hit in zip(images, flagged, strict=False):
            if hit:
                image.info[WITHHELD] = "safety checker"
        if any(flagged):
            self.flagged_images += sum(bool(f) for f in flagged)
            log.warning(
                "safety checker blacked out %d of %d images", sum(bool(f) for f in flagged), len(flagged)
            )
        return images
