"""The DF-GAN engine: one batched forward pass of our own generator per call."""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from collections.abc import Sequence

import torch
from PIL import Image, ImageOps

from training.dfgan.checkpoint import load_generator
from training.images import to_pil
from training.seeds import seed_noise
from training.shipped import SHIPPED_DFGAN, default_dfgan_checkpoint
from worker.engines.base import (
    EngineInfo,
    GenerationCancelled,
    GenerationRequest,
    ProgressCallback,
    resolve_device,
)

#: The checkpoint that ships with the project, used when none is configured.
SHIPPED_CHECKPOINT = SHIPPED_DFGAN

_EMBEDDING_CACHE_SIZE = 512
#: Images per forward pass on a CPU (0: the whole batch at once). Measured on a 2-core AMD EPYC,
#: 64x64 ngf=32, one torch thread (``benchmarks/dfgan_chunks.py``): 2.8 ms per image in
#: passes of 4 and 2.7 in passes of 6, against 3.3 ms in one pass of 8 (the activations of 8
#: pictures no longer fit the core's 2 MiB L2 cache). A GPU always takes the whole batch.
DEFAULT_CPU_CHUNK = 4


resolve_default_checkpoint = default_dfgan_checkpoint  # the engine's default: the shipped checkpoint


class DFGANEngine:
    """Text-to-image with a DF-GAN generator. Load once per process; :meth:`generate` is cheap."""

    def __init__(
        self, checkpoint: str | None, device: str = "auto", cpu_chunk: int = DEFAULT_CPU_CHUNK
    ) -> None:
        self.device = resolve_device(device)
        #: Images per forward pass: ``cpu_chunk`` on a CPU (0: all), the whole batch elsewhere.
        self.chunk = cpu_chunk if torch.device(self.device).type == "cpu" else 0
        self.loaded = load_generator(checkpoint, self.device)
        # Measured on a 2-core CPU, 64x64 ngf=32: channels_last is 15-35% faster (batch 1-16).
        self.loaded.netG.to(memory_format=torch.channels_last)
        config = self.loaded.config
        self.info = EngineInfo(
            name="dfgan",
            version=self.loaded.version,
            extra={"imsize": str(config.imsize), "text_encoder": config.text_encoder},
        )
        # Prompts repeat a lot in chat; the frozen encoder's output per prompt never changes.
        self._embeddings: OrderedDict[str, torch.Tensor] = OrderedDict()
        self._lock = threading.Lock()

    def generate(
        self, requests: list[GenerationRequest], progress: ProgressCallback | None = None
    ) -> list[list[Image.Image]]:
        """Draw one image per seed of every request in a single batched forward pass.

        The noise of each image comes only from its seed, so a seed gives the same picture whatever
        else is in the batch. Images are resized (Lanczos) to ``request.size`` when it differs from
        the model's resolution; for a job with an aspect (``request.width`` x ``request.height``) the
        square is centre-cropped to that shape and resized, never stretched. (Batching can change
        float rounding inside BLAS/oneDNN kernels, so a pixel may differ by a grey level between
        batch compositions; the picture is the same.)
        ``steps``, ``negative_prompt`` and ``guidance_scale`` do not apply to a one-pass GAN and are
        ignored. ``progress(0, 1)`` is asked before the pass (True cancels) and ``progress(1, 1)``
        is reported after it.
        """
        if progress is not None and progress(0, 1):
            raise GenerationCancelled()
        counts = [len(r.seeds) for r in requests]
        if sum(counts) == 0:
            return [[] for _ in requests]
        prompts = [r.prompt for r in requests for _ in r.seeds]
        seeds = [seed for r in requests for seed in r.seeds]
        with torch.inference_mode():
            sentences = torch.cat(
                [self._embed(r.prompt).expand(len(r.seeds), -1) for r in requests if r.seeds]
            )
            noise = self._noise(requests)
            with self._lock:  # one forward at a time; the model is shared by the worker's threads
                drawn = self._draw(prompts, seeds, sentences, noise)
        images = to_pil(drawn)
        out: list[list[Image.Image]] = []
        for request, count in zip(requests, counts, strict=True):
            out.append([_shaped(image, request.dimensions) for image in images[:count]])
            images = images[count:]
        if progress is not None:
            progress(1, 1)
        return out

    def _draw(
        self, prompts: list[str], seeds: list[int], sentences: torch.Tensor, noise: torch.Tensor | None
    ) -> torch.Tensor:
        """The generator's pictures, in forward passes of at most :attr:`chunk` images."""
        step = self.chunk if self.chunk > 0 else len(seeds)
        if len(seeds) <= step:
            return self.loaded.draw(prompts, seeds, sentences, noise)
        parts = [
            self.loaded.draw(
                prompts[i : i + step],
                seeds[i : i + step],
                sentences[i : i + step],
                None if noise is None else noise[i : i + step],
            )
            for i in range(0, len(seeds), step)
        ]
        return torch.cat(parts)

    def _noise(self, requests: list[GenerationRequest]) -> torch.Tensor | None:
        """The batch's noise when a request is a variation (``noise_near``); None: the seeds' own."""
        if not any(r.noise_near for r in requests):
            return None
        nz = self.loaded.config.nz
        rows = [
            near_noise(r.noise_near[0], r.seeds, r.noise_near[1], nz, r.noise_chain)
            if r.noise_near
            else seed_noise(r.seeds, nz)
            for r in requests
            if r.seeds
        ]
        return torch.cat(rows)

    def _embed(self, prompt: str) -> torch.Tensor:
        # One prompt per encoder call: the embedding then never depends on the other prompts' padding.
        with self._lock:
            cached = self._embeddings.get(prompt)
            if cached is not None:
                self._embeddings.move_to_end(prompt)
                return cached
        # Exactly the preprocessing used in training (truncation, scale).
        emb = self.loaded.embed([prompt])
        with self._lock:
            self._embeddings[prompt] = emb
            if len(self._embeddings) > _EMBEDDING_CACHE_SIZE:
                self._embeddings.popitem(last=False)
        return emb


def near_noise(
    source_seed: int, seeds: Sequence[int], mix: float, nz: int, earlier: Sequence[int] = ()
) -> torch.Tensor:
    """``[len(seeds), nz]`` noise near the source picture's: row ``i`` is ``((1 - mix) z(source) +
    mix z(seeds[i])) / sqrt((1 - mix)² + mix²)``, computed in float64. Two independent standard
    normal vectors mixed this way are standard normal again, so the generator sees noise like any
    other. ``z(source)`` is ``source_seed``'s noise, or, for a source that was itself a variation,
    the same mix down its chain of ``earlier`` seeds (oldest first)."""
    chain = [*earlier, source_seed]
    source = seed_noise(chain[:1], nz).double()
    for seed in chain[1:]:
        source = _mixed(source, seed_noise([seed], nz).double(), mix)
    return _mixed(source, seed_noise(seeds, nz).double(), mix).float()


def _mixed(near: torch.Tensor, fresh: torch.Tensor, mix: float) -> torch.Tensor:
    """``near`` moved towards ``fresh`` by ``mix``, normalised back to unit variance."""
    return ((1.0 - mix) * near + mix * fresh) / math.hypot(1.0 - mix, mix)


def _shaped(image: Image.Image, dimensions: tuple[int, int]) -> Image.Image:
    """``image`` at ``dimensions`` (width, height): resized (Lanczos) when the model draws another
    size, and centre-cropped first when the shape is not square (the model draws squares only)."""
    if image.size == dimensions:
        return image
    if dimensions[0] == dimensions[1]:
        return image.resize(dimensions, Image.Resampling.LANCZOS)
    return ImageOps.fit(image, dimensions, Image.Resampling.LANCZOS, centering=(0.5, 0.5))
