"""The diffusion engine: any diffusers text-to-image pipeline (SD 1.x, SDXL, Flux, or our shipped model).

Nothing is downloaded here. A model is a local diffusers folder, or a hub id already in the local
Hugging Face cache; anything else raises :class:`ModelNotAvailable` with the command that fetches it.
"""

from __future__ import annotations

import inspect
import json
import logging
import math
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image, ImageOps

from core.aspect import fit_dimensions
from core.compose import WITHHELD
from core.nsfw import NSFW_ACTION, NsfwPolicy
from training.diffusion.pipeline import PIPELINE_CLASS_NAME
from training.diffusion.tiny import META_FILE, ensure_tiny_pipeline
from training.seeds import seed_generators
from training.shipped import SHIPPED_DIFFUSION
from worker.engines.base import (
    EngineInfo,
    GenerationCancelled,
    GenerationRequest,
    ProgressCallback,
    report_step,
    resolve_device,
)
from worker.engines.lora import applied_loras
from worker.previews import EstimateTap

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
    width: int
    height: int
    negative: str | None
    guidance: float | None
    #: Image-to-image: one starting picture per image (width × height) and how much of it to redraw.
    images: list[Image.Image] | None = None
    strength: float | None = None


#: Requests drawn in one pipeline call share these: steps, (width, height), negative prompt, guidance,
#: strength (None: text-to-image) and LoRAs.
_GroupKey = tuple[int, tuple[int, int], str | None, float | None, float | None, tuple[tuple[str, float], ...]]


def img2img_steps(steps: int, strength: float) -> int:
    """Denoising steps an image-to-image run takes: the last ``strength`` share of ``steps`` (the
    rule diffusers' image-to-image pipelines follow)."""
    return min(int(steps * strength), steps)


def _report_only(checker: Any) -> None:
    """Make the pipeline's safety checker flag pictures without blacking them out: the engine then
    applies each request's NSFW policy itself (withhold, spoiler, allow)."""
    check = checker.forward

    def flag_only(clip_input: Any, images: Any) -> tuple[Any, Any]:
        copy = images.copy() if hasattr(images, "copy") else images.clone()
        _, flagged = check(clip_input=clip_input, images=copy)
        return images, flagged

    checker.forward = flag_only


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
        lora_dir: Path | None = None,
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
                blacks out images it flags). False loads the pipeline without it. Each request's
                ``nsfw`` rule then says what happens to a flagged picture.
            lora_dir: The operator's LoRA folder (``--lora NAME`` picks a file in it).

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
        self.pipe = pipe
        self._place(attention_slicing, cpu_offload)
        # Flux packs 2×2 latent patches, so its sides must be multiples of 16; others need multiples of 8.
        scale = int(getattr(pipe, "vae_scale_factor", 8))
        self.size_multiple = max(8, scale * 2 if pipeline_class.startswith("Flux") else scale)
        self._lock = threading.Lock()
        self.safety_checker = has_checker and safety_checker
        if self.safety_checker:
            _report_only(pipe.safety_checker)
        self.lora_dir = lora_dir
        self._img2img: Any = None  # the image-to-image pipeline sharing these weights, made on first use
        #: How many images the model's safety checker flagged since the engine loaded.
        self.flagged_images = 0
        self.info = EngineInfo(
            name="diffusion",
            version=self._version(source, folder),
            extra={"pipeline": type(pipe).__name__, "device": self.device, "dtype": str(self.dtype)},
        )

    def _place(self, attention_slicing: bool, cpu_offload: bool) -> None:
        """Put the pipeline on the device (or let it offload sub-models there), quietly."""
        self.pipe.set_progress_bar_config(disable=True)
        if attention_slicing:
            self.pipe.enable_attention_slicing()
        if cpu_offload and self.device.startswith("cuda"):
            self.pipe.enable_model_cpu_offload(device=self.device)
        else:
            self.pipe.to(self.device)

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

    def image_dims(self, dimensions: tuple[int, int]) -> tuple[int, int]:
        """(width, height) actually drawn for requested ``dimensions``: a square as :meth:`image_size`,
        another shape as near its ratio and pixel count as the model's size multiple allows."""
        width, height = dimensions
        if width == height:
            return self.image_size(width), self.image_size(height)
        m = self.size_multiple
        if width % m == 0 and height % m == 0 and max(width, height) <= MAX_SIZE:
            return width, height
        return fit_dimensions(round(math.sqrt(width * height)), width / height, m, MAX_SIZE - MAX_SIZE % m)

    def generate(
        self, requests: list[GenerationRequest], progress: ProgressCallback | None = None
    ) -> list[list[Image.Image]]:
        """Draw every request, one pipeline call per group of requests with the same settings
        (steps, size, negative prompt, guidance, image-to-image strength, LoRAs).

        Each image gets its own CPU generator seeded with its seed, so a seed gives the same starting
        noise on any device and in any batch (with an image: same seed, image and strength, same
        picture). ``progress`` sees steps summed over all calls. A group's LoRAs are merged in for its
        call and taken out after. Each flagged picture is handled by its request's NSFW rule.

        Raises:
            GenerationCancelled: ``progress`` returned True; the run stopped at that step.
            LoraNotAvailable: a LoRA is not in the folder or does not fit this model.
        """
        groups: dict[_GroupKey, list[int]] = {}
        for i, req in enumerate(requests):
            if req.seeds:
                groups.setdefault(self._group_key(req), []).append(i)
        total = sum(self._steps_run(key) for key in groups)
        results: list[list[Image.Image]] = [[] for _ in requests]
        done = 0
        with self._lock:
            for key, members in groups.items():
                call = self._call(key, [requests[i] for i in members])
                layout = (len(requests), [(i, len(requests[i].seeds)) for i in members])  # for previews
                with applied_loras(self.pipe, self.lora_dir, key[5]):
                    images = self._run(call, progress, done, total, layout)
                done += self._steps_run(key)
                for i in members:
                    n = len(requests[i].seeds)
                    shaped = [_shaped(image, requests[i].dimensions) for image in images[:n]]
                    results[i], images = self._apply_policy(shaped, requests[i].nsfw), images[n:]
        return results

    def _group_key(self, req: GenerationRequest) -> _GroupKey:
        strength = None if req.image is None else float(req.strength)
        dims = self.image_dims(req.dimensions)
        return (req.steps, dims, req.negative_prompt, req.guidance_scale, strength, tuple(req.loras))

    @staticmethod
    def _steps_run(key: _GroupKey) -> int:
        steps, strength = key[0], key[4]
        return steps if strength is None else img2img_steps(steps, strength)

    @staticmethod
    def _call(key: _GroupKey, members: list[GenerationRequest]) -> _Call:
        """The pipeline call for one group: every member's prompt once per seed, and with an image, that
        image (centre-cropped to the shape and resized) once per seed."""
        steps, (width, height), negative, guidance, strength, _ = key
        prompts = [req.prompt for req in members for _ in req.seeds]
        seeds = [s for req in members for s in req.seeds]
        images = None
        if strength is not None:
            images = []
            for req in members:
                assert req.image is not None  # grouped by strength: only requests with an image
                start = ImageOps.fit(req.image.convert("RGB"), (width, height), Image.Resampling.LANCZOS)
                images += [start] * len(req.seeds)
        return _Call(prompts, seeds, steps, width, height, negative, guidance, images, strength)

    def _pipeline(self, call: _Call) -> Any:
        """The text-to-image pipeline, or for an image call the image-to-image one: our own pipeline
        does both; a diffusers one gets ``AutoPipelineForImage2Image.from_pipe`` (same weights)."""
        if call.images is None or type(self.pipe).__name__ == PIPELINE_CLASS_NAME:
            return self.pipe
        if self._img2img is None:
            from diffusers import AutoPipelineForImage2Image

            self._img2img = AutoPipelineForImage2Image.from_pipe(self.pipe)
            self._img2img.set_progress_bar_config(disable=True)
        return self._img2img

    def _run(
        self,
        call: _Call,
        progress: ProgressCallback | None,
        done: int,
        total: int,
        layout: tuple[int, list[tuple[int, int]]] = (0, []),
    ) -> list[Image.Image]:
        """One pipeline call; raises GenerationCancelled when ``progress`` asks to stop. Each step
        offers ``progress`` a live preview (:mod:`worker.previews`); ``layout`` is (requests in the
        batch, [(request index, pictures)] of this call)."""
        cancelled = False
        stopped_at = 0
        pipe = self._pipeline(call)
        expected = call.steps if call.strength is None else img2img_steps(call.steps, call.strength)
        if expected == 0:
            return [image.copy() for image in call.images or []]  # nothing to redraw: the picture itself
        can_interrupt = isinstance(getattr(type(pipe), "interrupt", None), property)
        tap = EstimateTap(pipe, *layout)

        def on_step_end(pipe: Any, step: int, timestep: Any, tensors: dict[str, Any]) -> dict[str, Any]:
            nonlocal cancelled, stopped_at
            # Some schedulers (Heun, DPM2) run more model steps than asked; scale back to the user's steps.
            n_timesteps = int(getattr(pipe, "_num_timesteps", 0) or expected)
            current = done + max(1, round((step + 1) * expected / n_timesteps))
            if progress is not None and report_step(progress, current, total, tap.source()):
                cancelled, stopped_at = True, current
                if can_interrupt:
                    # The pipeline skips the remaining steps; it still decodes, which we discard.
                    pipe._interrupt = True
                else:
                    raise _StopRun
            return tensors

        params = set(inspect.signature(pipe.__call__).parameters)
        kwargs = self._call_kwargs(call, params)
        if "callback_on_step_end" in params:
            kwargs["callback_on_step_end"] = on_step_end
        try:
            with torch.inference_mode(), tap:
                output = pipe(**kwargs)
        except _StopRun:
            pass
        if cancelled:
            raise GenerationCancelled(f"cancelled at step {stopped_at} of {total}")
        return self._mark_flagged(output)

    @staticmethod
    def _call_kwargs(call: _Call, params: set[str]) -> dict[str, Any]:
        """The pipeline call's arguments: one CPU generator per seed, the starting images and strength
        for image-to-image, and guidance, the negative prompt and the size only where the pipeline
        takes them (image-to-image pipelines draw at the starting image's size)."""
        kwargs: dict[str, Any] = {
            "prompt": call.prompts,
            "num_inference_steps": call.steps,
            "generator": seed_generators(call.seeds),
            "output_type": "pil",
        }
        optional = {"height": call.height, "width": call.width, "guidance_scale": call.guidance}
        if call.negative:
            optional["negative_prompt"] = [call.negative] * len(call.prompts)
        if call.images is not None:
            optional.update(image=call.images, strength=call.strength)
        kwargs.update({k: v for k, v in optional.items() if v is not None and k in params})
        return kwargs

    def _mark_flagged(self, output: Any) -> list[Image.Image]:
        """The output's images, each one the safety checker flagged marked as such (and counted)."""
        images = list(output.images)
        flagged = getattr(output, "nsfw_content_detected", None) or []
        for image, hit in zip(images, flagged, strict=False):
            if hit:
                image.info[WITHHELD] = "safety checker"
        if any(flagged):
            self.flagged_images += sum(bool(f) for f in flagged)
            log.warning("safety checker flagged %d of %d images", sum(bool(f) for f in flagged), len(flagged))
        return images

    @staticmethod
    def _apply_policy(images: list[Image.Image], rule: str) -> list[Image.Image]:
        """Each flagged picture under ``rule``: withheld (a black square, marked), or kept and marked
        ``spoiler`` / ``allowed`` for the record and the senders (:mod:`core.nsfw`)."""
        policy = NsfwPolicy(rule)
        out = []
        for image in images:
            if image.info.get(WITHHELD) and policy != NsfwPolicy.WITHHOLD:
                kept = image.copy()
                kept.info.pop(WITHHELD, None)
                kept.info[NSFW_ACTION] = "spoiler" if policy == NsfwPolicy.SPOILER else "allowed"
                image = kept
            elif image.info.get(WITHHELD):
                black = Image.new("RGB", image.size)
                black.info[WITHHELD] = image.info[WITHHELD]
                image = black
            out.append(image)
        return out


def _shaped(image: Image.Image, dimensions: tuple[int, int]) -> Image.Image:
    """A picture of another shape (``--ar``) drawn a little off its ratio (a model whose sides must be
    multiples of 16) centre-cropped and resized to exactly ``dimensions``, keeping its marks."""
    width, height = dimensions
    if width == height or image.size == dimensions:
        return image
    fitted = ImageOps.fit(image, dimensions, Image.Resampling.LANCZOS)
    fitted.info.update(image.info)
    return fitted
