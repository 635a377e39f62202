"""The hosted engine: Hugging Face Inference (``InferenceClient.text_to_image``).

Opt-in (``IMAGINEBOT_ENGINES=dfgan,diffusion,hf-api``); it compares our local models with a hosted
one, as the original project did. Needs ``IMAGINEBOT_HF_API_TOKEN``; ``IMAGINEBOT_HF_API_BASE_URL``
points it at a dedicated Inference Endpoint (or a test server).
"""

from __future__ import annotations

import contextlib
import io
import logging
import time
from collections.abc import Iterator

from PIL import Image

from worker.engines.base import EngineInfo, GenerationCancelled, GenerationRequest, ProgressCallback

log = logging.getLogger(__name__)

RETRY_STATUSES = (429, 503)  # rate limited; model loading


class HFApiError(RuntimeError):
    """The hosted engine cannot draw; the message says what to do."""


class HFApiEngine:
    """One HTTP request per image; retries 429 and 503 ("model loading") with backoff."""

    def __init__(
        self,
        model: str,
        token: str | None,
        base_url: str | None = None,
        timeout_s: float = 120.0,
        max_attempts: int = 4,
        backoff_s: float = 2.0,
    ) -> None:
        if not token:
            raise HFApiError(
                "The hf-api engine needs a Hugging Face token: set IMAGINEBOT_HF_API_TOKEN "
                "(or remove hf-api from IMAGINEBOT_ENGINES)."
            )
        from huggingface_hub import InferenceClient

        # With a base URL the request goes straight to it (an Inference Endpoint); else the
        # client routes ``model`` through Hugging Face's inference service.
        self.client = InferenceClient(
            model=base_url or model,
            token=token,
            timeout=timeout_s,
            provider=None if base_url else "hf-inference",
        )
        self.model = model
        self.max_attempts = max_attempts
        self.backoff_s = backoff_s
        self.info = EngineInfo(name="hf-api", version=model)

    def generate(
        self, requests: list[GenerationRequest], progress: ProgressCallback | None = None
    ) -> list[list[Image.Image]]:
        """Draw each seed of each request with one API call."""
        total = sum(len(r.seeds) for r in requests)
        done = 0
        out: list[list[Image.Image]] = []
        for request in requests:
            images = []
            for seed in request.seeds:
                images.append(self._one(request, seed))
                done += 1
                if progress is not None and progress(done, total):
                    raise GenerationCancelled()
            out.append(images)
        return out

    def _one(self, request: GenerationRequest, seed: int) -> Image.Image:
        from huggingface_hub.errors import HfHubHTTPError, InferenceTimeoutError

        for attempt in range(1, self.max_attempts + 1):
            try:
                with _online():
                    image = self.client.text_to_image(
                        request.prompt,
                        negative_prompt=request.negative_prompt,
                        height=request.dimensions[1],
                        width=request.dimensions[0],
                        num_inference_steps=request.steps,
                        guidance_scale=request.guidance_scale,
                        seed=seed,
                    )
                return _as_pil(image)
            except HfHubHTTPError as exc:
                status = exc.response.status_code if exc.response is not None else None
                if status in (401, 403):
                    raise HFApiError(
                        f"Hugging Face rejected the token (HTTP {status}): check IMAGINEBOT_HF_API_TOKEN "
                        f"and that it may call {self.model}."
                    ) from None
                if status not in RETRY_STATUSES or attempt == self.max_attempts:
                    raise HFApiError(
                        f"Hugging Face inference failed (HTTP {status}): {str(exc)[:160]}"
                    ) from None
                wait = _retry_after(exc) or self.backoff_s * 2 ** (attempt - 1)
                log.info("hf-api: HTTP %s, retrying in %.1f s (attempt %d)", status, wait, attempt)
                time.sleep(wait)
            except InferenceTimeoutError:
                if attempt == self.max_attempts:
                    raise HFApiError("Hugging Face inference timed out (model still loading?).") from None
                time.sleep(self.backoff_s * 2 ** (attempt - 1))
        raise AssertionError("unreachable")


@contextlib.contextmanager
def _online() -> Iterator[None]:
    """Allow huggingface_hub HTTP for this call only.

    Workers run with HF_HUB_OFFLINE=1 so that local models never reach for the network; the
    hosted engine is the one part a user enabled *for* the network. Engines of a worker run one
    at a time, and the local ones load with ``local_files_only`` regardless.
    """
    from huggingface_hub import constants

    before = constants.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = False
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = before


def _retry_after(exc: Exception) -> float | None:
    response = getattr(exc, "response", None)
    value = response.headers.get("Retry-After") if response is not None else None
    try:
        return min(float(value), 60.0) if value else None
    except ValueError:
        return None


def _as_pil(image: object) -> Image.Image:
    if isinstance(image, Image.Image):
        return image.convert("RGB")
    if isinstance(image, bytes | bytearray):
        return Image.open(io.BytesIO(image)).convert("RGB")
    raise HFApiError(f"unexpected response type {type(image).__name__}")
