"""Live previews: every few steps of a diffusion run, a small picture of what it is drawing.

The picture is the model's current estimate of the clean image (the "x0 prediction"): the scheduler
step's ``pred_original_sample`` where it gives one, otherwise computed from the noise prediction. A
latent pipeline's estimate is turned into colours by a fixed linear projection of its four latent
channels (never a full VAE decode); a pixel-space pipeline's estimate already is a picture.

Two halves meet here. The engine side (:class:`EstimateTap`) keeps the latest estimate during a
pipeline call and offers it, lazily, with each progress report. The worker side (:class:`LivePreviews`)
turns an offered estimate into one small PNG per job only when a preview is due and the job's record
is about to be written anyway (the throttled progress write): a preview never costs a record write.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Callable
from typing import Any

import redis
import torch
from PIL import Image

from core.jobs import PREVIEW_KEY_PREFIX
from worker.engines.base import PreviewSource

log = logging.getLogger(__name__)

#: How long a preview PNG stays in Redis: long enough for a front-end to fetch it, not to pile up.
PREVIEW_TTL_S = 600
#: Largest side of a preview picture.
PREVIEW_SIDE = 256
#: A preview is at most this many times larger than the estimate it shows.
MAX_ENLARGEMENT = 2.0

#: Stable Diffusion 1.x/2.x latents (as the UNet sees them) -> RGB in about [-1, 1]: the fixed linear
#: projection ComfyUI and AUTOMATIC1111 use for their cheap previews.
SD_LATENT_RGB = (
    (0.3512, 0.2297, 0.3227),
    (0.3250, 0.4974, 0.2350),
    (-0.2829, 0.1762, 0.2721),
    (-0.2120, -0.2616, -0.7177),
)
#: The same for SDXL's latents, with its bias.
SDXL_LATENT_RGB = (
    (0.3651, 0.4232, 0.4341),
    (-0.2533, -0.0042, 0.1068),
    (0.1076, 0.1111, -0.0362),
    (-0.3165, -0.2492, -0.2188),
)
SDXL_LATENT_BIAS = (0.1084, -0.0175, -0.0011)


def preview_kind(pipe: Any) -> str | None:
    """How ``pipe``'s estimates become colours: ``pixels`` (a pixel-space pipeline), ``sdxl`` or ``sd``
    (four latent channels), or None (no cheap preview: packed or wider latents, e.g. Flux, SD3)."""
    unet = getattr(pipe, "unet", None)
    if unet is None or getattr(pipe, "vae", None) is None:
        channels = getattr(getattr(unet, "config", None), "out_channels", None)
        return "pixels" if channels == 3 else None
    if int(getattr(unet.config, "out_channels", 0)) != 4:
        return None
    return "sdxl" if "XL" in type(pipe).__name__ else "sd"


def clean_estimate(scheduler: Any, output: Any, model_output: Any, timestep: Any, sample: Any) -> Any:
    """The model's estimate of the clean sample at this step: the step output's
    ``pred_original_sample`` when the scheduler gives one, else computed from the model output with the
    scheduler's ``alphas_cumprod`` (epsilon, v or sample prediction); None when neither is possible."""
    if isinstance(output, tuple):
        given = output[1] if len(output) > 1 and isinstance(output[1], torch.Tensor) else None
    else:
        given = getattr(output, "pred_original_sample", None)
    if given is not None:
        return given
    alphas = getattr(scheduler, "alphas_cumprod", None)
    if alphas is None or not isinstance(model_output, torch.Tensor):
        return None
    t = int(timestep.flatten()[0]) if isinstance(timestep, torch.Tensor) else int(timestep)
    a = alphas[min(max(t, 0), len(alphas) - 1)].to(device=sample.device, dtype=torch.float32)
    x, out = sample.float(), model_output.float()
    kind = getattr(scheduler.config, "prediction_type", "epsilon")
    if kind == "v_prediction":
        return a.sqrt() * x - (1 - a).sqrt() * out
    if kind == "sample":
        return out
    return (x - (1 - a).sqrt() * out) / a.sqrt()


def to_pictures(estimate: torch.Tensor, kind: str) -> list[Image.Image]:
    """One RGB picture per item of ``estimate`` ([B, C, H, W]) by the fixed projection of ``kind``."""
    x = estimate.detach().float()
    if kind == "pixels":
        rgb = x[:, :3]
    else:
        factors = SDXL_LATENT_RGB if kind == "sdxl" else SD_LATENT_RGB
        matrix = torch.tensor(factors, device=x.device)
        rgb = torch.einsum("bchw,cr->brhw", x[:, :4], matrix)
        if kind == "sdxl":
            rgb = rgb + torch.tensor(SDXL_LATENT_BIAS, device=x.device)[None, :, None, None]
    pixels = ((rgb.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    return [Image.fromarray(array) for array in pixels]


def preview_picture(pictures: list[Image.Image], side: int = PREVIEW_SIDE) -> Image.Image:
    """A job's pictures as one small image: a grid of two columns when there are several, scaled so
    that its longer side is ``side``, but to at most twice the estimate's own size (a latent estimate
    is an eighth of the picture's side; more pixels than that only cost PNG encoding time)."""
    cols = 1 if len(pictures) == 1 else 2
    rows = (len(pictures) + cols - 1) // cols
    w, h = pictures[0].size
    sheet = Image.new("RGB", (w * cols, h * rows))
    for i, picture in enumerate(pictures):
        sheet.paste(picture.resize((w, h)), ((i % cols) * w, (i // cols) * h))
    scale = min(side / max(sheet.size), MAX_ENLARGEMENT)
    size = (max(1, round(sheet.width * scale)), max(1, round(sheet.height * scale)))
    return sheet.resize(size, Image.Resampling.BILINEAR)


def preview_png(pictures: list[Image.Image], side: int = PREVIEW_SIDE) -> bytes:
    """:func:`preview_picture` as PNG bytes (fast compression: it lives for minutes)."""
    buf = io.BytesIO()
    preview_picture(pictures, side).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def preview_key(job_id: str, step: int) -> str:
    """The Redis key of job ``job_id``'s preview at ``step`` (a new key for each preview)."""
    return f"{PREVIEW_KEY_PREFIX}{job_id}:{step}"


def steps_between(setting: int, total: int) -> int | None:
    """Steps between two previews: ``setting`` when positive; 0 means about a quarter of the run (at
    least one step); negative means no previews (None)."""
    if setting < 0:
        return None
    return setting if setting > 0 else max(1, total // 4)


class EstimateTap:
    """While a pipeline call runs (``with tap:``), keeps the latest clean-image estimate of its
    scheduler's steps, and offers it as a :data:`~worker.engines.base.PreviewSource`.

    ``layout`` says whose pictures the call draws: (request index, number of pictures) in the call's
    order, out of ``n_requests`` requests of the batch.
    """

    def __init__(self, pipe: Any, n_requests: int, layout: list[tuple[int, int]]) -> None:
        self.kind = preview_kind(pipe)
        self.scheduler = getattr(pipe, "scheduler", None)
        self.n_requests = n_requests
        self.layout = layout
        self.estimate: torch.Tensor | None = None

    def __enter__(self) -> EstimateTap:
        if self.kind is not None and self.scheduler is not None:
            step = self.scheduler.step  # the bound method; restored on exit

            def tapped(model_output: Any, timestep: Any, sample: Any, *args: Any, **kwargs: Any) -> Any:
                output = step(model_output, timestep, sample, *args, **kwargs)
                self.estimate = clean_estimate(self.scheduler, output, model_output, timestep, sample)
                return output

            self.scheduler.step = tapped
        return self

    def __exit__(self, *exc: object) -> None:
        if self.scheduler is not None and "step" in vars(self.scheduler):
            del self.scheduler.step
        self.estimate = None

    def source(self) -> PreviewSource | None:
        """The latest estimate as a lazy preview (pictures made only if called); None before the
        first step, or for a pipeline without a cheap preview."""
        estimate, kind = self.estimate, self.kind
        if estimate is None or kind is None:
            return None

        def pictures() -> list[list[Image.Image]]:
            drawn = to_pictures(estimate, kind)
            out: list[list[Image.Image]] = [[] for _ in range(self.n_requests)]
            for index, count in self.layout:
                out[index], drawn = drawn[:count], drawn[count:]
            return out

        return pictures


class LivePreviews:
    """One batch's previews on the worker side: keeps the latest preview an engine offered and, when
    the batch's records are written and a preview is due, stores one small PNG per job (a new key, a
    short TTL). Job ids are in the batch's order, the order of the engines' requests."""

    def __init__(self, client: redis.Redis, job_ids: list[str], every: int) -> None:
        self.redis = client
        self.job_ids = job_ids
        self.every = every  # the IMAGINEBOT_PREVIEW_EVERY setting (see steps_between)
        self.offered: PreviewSource | None = None
        self.last_step = 0
        self.keys: dict[str, str] = {}

    def offer(self, source: PreviewSource) -> None:
        """Keep ``source`` (the latest estimate) for the next write; nothing is drawn yet."""
        self.offered = source

    def keys_at(self, step: int, total: int) -> dict[str, str]:
        """Job id -> its latest preview key, after storing new previews when one is due at ``step``.

        A preview that cannot be made or stored is skipped (logged): it never fails the job."""
        every = steps_between(self.every, total)
        source, self.offered = self.offered, None
        if source is None or every is None or step - self.last_step < every:
            return self.keys
        self.last_step = step
        try:
            made = source()
            for job_id, pictures in zip(self.job_ids, made, strict=False):
                if pictures:
                    key = preview_key(job_id, step)
                    self.redis.set(key, preview_png(pictures), ex=PREVIEW_TTL_S)
                    self.keys[job_id] = key
        except Exception as exc:  # noqa: BLE001 - a preview is a nicety; the drawing goes on
            log.warning("preview at step %d not stored: %s: %s", step, type(exc).__name__, exc)
        return self.keys


class EngineProgress:
    """The progress callback one engine gets from the worker: ``(step, total) -> stop?`` by ``report``,
    and ``offer_preview(source)`` for the engines that have live previews
    (:func:`worker.engines.base.report_step`)."""

    def __init__(self, report: Callable[[int, int], bool], previews: LivePreviews) -> None:
        self.report = report
        self.previews = previews

    def __call__(self, step: int, total: int) -> bool:
        return self.report(step, total)

    def offer_preview(self, source: PreviewSource) -> None:
        """Hand the engine's latest estimate to the batch's previews."""
        self.previews.offer(source)
