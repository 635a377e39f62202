"""Loads each engine once per worker process and hands out the loaded instance."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import redis

from core.model_catalog import DEFAULT_MODEL, parse_dfgan_models, parse_models, served_models
from core.settings import Settings
from worker.engines.base import Engine

log = logging.getLogger(__name__)


#: Engines whose weights the model registry versions: a promoted version replaces the default.
VERSIONED = ("dfgan", "diffusion")


class ModelNotServed(LookupError):
    """A job asked for a model this worker is not configured for."""


class LoadedEngines:
    """Lazily loaded engines, keyed by name. Thread-safe; loading happens at most once per name."""

    def __init__(self, settings: Settings, redis_client: redis.Redis | None = None) -> None:
        self.settings = settings
        self._engines: dict[str, Engine] = {}
        self._lock = threading.Lock()
        self._redis = redis_client
        self._versions: dict[str, str | None] = {}  # registry version loaded; None: the configured default
        self._failed: dict[str, str] = {}  # a promoted version that would not load (not retried)
        self._reload_lock = threading.Lock()

    def get(
        self, name: str, model: str | None = None, promoted: dict[str, bytes | None] | None = None
    ) -> Engine:
        """The loaded engine ``name`` (loads it on first use); for ``diffusion`` and ``dfgan``, the one
        drawing with ``model`` (a name from that engine's catalogue in :mod:`core.model_catalog`,
        :func:`core.model_catalog.engine_model` of the job; None or ``default``: the default model).

        For a versioned engine (``dfgan``, ``diffusion``), first asks the model registry (one Redis
        GET; none when ``promoted`` has the values of :meth:`promoted_keys` as the caller just read
        them) which version is promoted and swaps to it when it differs from the loaded one. A batch
        already drawing keeps the engine object it got, so it finishes on its version; the next batch
        gets the new one. Only the default model follows promotions; the others are the operator's
        folders as configured.

        Raises:
            ModelNotServed: ``model`` is not among the models this worker serves.
        """
        if name == "diffusion" and model not in (None, DEFAULT_MODEL):
            return self._get_model(model)
        if name == "dfgan" and model not in (None, DEFAULT_MODEL):
            return self._get_dfgan_model(model)
        if name in VERSIONED:
            self._follow_promoted(name, promoted)
        engine = self._engines.get(name)
        if engine is not None:
            return engine
        with self._lock:
            if name not in self._engines:
                started = time.perf_counter()
                self._engines[name] = self._load(name)
                log.info("loaded engine %s in %.1f s", name, time.perf_counter() - started)
            return self._engines[name]

    def served_models(self) -> list[str]:
        """The diffusion model names this worker draws with (``IMAGINEBOT_WORKER_MODELS``)."""
        return served_models(self.settings)

    def _get_model(self, model: str) -> Engine:
        """The diffusion engine for the configured model ``model`` (loaded on first use)."""
        if model not in self.served_models():
            raise ModelNotServed(f"this worker does not serve the diffusion model {model!r}")
        entry = parse_models(self.settings)[model]
        return self._load_named("diffusion", model, lambda: _folder_of(entry.folder, entry.shipped))

    def _get_dfgan_model(self, model: str) -> Engine:
        """The DF-GAN engine for the catalogue's model ``model`` (loaded on first use; every worker
        serves them all: a DF-GAN is a few MB). It keeps its own weights: promotions move the
        default DF-GAN only."""
        entry = parse_dfgan_models(self.settings).get(model)
        if entry is None or entry.folder is None:
            raise ModelNotServed(f"there is no DF-GAN model {model!r}")
        folder = entry.folder
        return self._load_named("dfgan", model, lambda: str(_folder_of(folder, entry.shipped)))

    def _load_named(self, engine_name: str, model: str, folder: Callable[[], str]) -> Engine:
        """``engine_name``'s engine for the named ``model`` from ``folder()``: loaded once (under the
        lock, with the torch thread setting), labelled with the model's name, the load time logged."""
        key = f"{engine_name}@{model}"
        with self._lock:
            if key not in self._engines:
                started = time.perf_counter()
                self._set_threads()
                engine = self._load_default(engine_name, folder())
                engine.info.extra["model"] = model
                self._engines[key] = engine
                log.info("loaded %s model %s in %.1f s", engine_name, model, time.perf_counter() - started)
            return self._engines[key]

    def loaded_versions(self) -> dict[str, str]:
        """Name -> version of the engines loaded so far (loads nothing; for the worker's heartbeat)."""
        return {name: engine.info.version for name, engine in list(self._engines.items())}

    def _set_threads(self) -> None:
        if self.settings.torch_threads > 0:
            import torch

            torch.set_num_threads(self.settings.torch_threads)

    def _load(self, name: str) -> Engine:
        self._set_threads()
        if name in VERSIONED:
            promoted = self._promoted_version(name)
            if promoted is not None:
                try:
                    return self._load_version(name, promoted)
                except Exception:
                    log.exception("promoted %s %s cannot be loaded; using the default", name, promoted)
                    self._failed[name] = promoted
            self._versions[name] = None
        return self._load_default(name)

    def _load_default(self, name: str, folder: str | None = None) -> Engine:
        """Engine ``name`` from the configured (or shipped) model, or from ``folder`` when given."""
        s = self.settings
        if name == "dfgan":
            from worker.engines.dfgan import DFGANEngine, resolve_default_checkpoint

            return DFGANEngine(
                folder or resolve_default_checkpoint(s.dfgan_checkpoint), s.device, s.dfgan_cpu_chunk
            )
        if name == "diffusion":
            from diffusers.utils import logging as diffusers_logging

            from worker.engines.diffusion import DiffusionEngine

            diffusers_logging.disable_progress_bar()  # bars in worker logs are noise

            return DiffusionEngine(
                folder or s.diffusion_model,
                s.data_dir,
                device=s.device,
                dtype=s.diffusion_dtype,
                attention_slicing=s.diffusion_attention_slicing,
                cpu_offload=s.diffusion_cpu_offload,
                safety_checker=s.diffusion_safety_checker,
                lora_dir=s.lora_dir,
            )
        if name == "hf-api":
            from worker.engines.hf_api import HFApiEngine

            return HFApiEngine(s.hf_api_model, s.hf_api_token, s.hf_api_base_url, s.hf_api_timeout_s)
        if name == "upscale":
            from worker.engines.upscale import load_upscaler

            return load_upscaler(s.upscaler, s.device, s.diffusion_dtype)
        raise ValueError(f"no engine called {name!r}")

    # --- hot reload of promoted versions ----------------------------------------------------------
    @staticmethod
    def promoted_keys() -> tuple[str, ...]:
        """The registry keys :meth:`get` reads, for a caller that reads them in a round trip of its own."""
        from core.model_versions import promoted_key

        return tuple(promoted_key(name) for name in VERSIONED)

    def _promoted_version(self, name: str, known: dict[str, bytes | None] | None = None) -> str | None:
        """The promoted version of engine ``name`` (one GET, or taken from ``known``: registry keys as
        just read), or None when none is, or Redis is not configured."""
        from core.model_versions import promoted_key

        if known is not None and promoted_key(name) in known:
            raw = known[promoted_key(name)]
            return None if raw is None else raw.decode()
        if self._redis is None:
            if not self.settings.redis_url:
                return None
            from core.store import connect

            self._redis = connect(self.settings.redis_url)
        try:
            raw = self._redis.get(promoted_key(name))
        except redis.RedisError:
            log.warning("cannot read the promoted %s version; keeping the loaded one", name)
            return self._versions.get(name)
        return None if raw is None else raw.decode()

    def _follow_promoted(self, name: str, known: dict[str, bytes | None] | None = None) -> None:
        """Swap engine ``name`` when its promoted version changed (loaded outside the lock)."""
        if name not in self._engines:
            return  # the first load reads the promoted version itself
        wanted = self._promoted_version(name, known)
        if wanted == self._versions.get(name) or (wanted is not None and wanted == self._failed.get(name)):
            return
        # One thread loads; the others keep drawing with the current engine meanwhile.
        if not self._reload_lock.acquire(blocking=False):
            return
        try:
            self._swap(name, wanted)
        finally:
            self._reload_lock.release()

    def _swap(self, name: str, wanted: str | None) -> None:
        started = time.perf_counter()
        try:
            # None: the promotion was cleared (rolled back past the first): the default again.
            engine = self._load_default(name) if wanted is None else self._load_version(name, wanted)
        except Exception:
            kept = self._versions.get(name)
            log.exception("promoted %s %s cannot be loaded; keeping %s", name, wanted, kept)
            if wanted is not None:
                self._failed[name] = wanted
            return
        with self._lock:
            self._engines[name] = engine
            self._versions[name] = wanted
        log.info("switched %s to %s in %.1f s", name, engine.info.version, time.perf_counter() - started)

    def _load_version(self, name: str, version: str) -> Engine:
        """Load ``version`` from this machine's copy, fetched from Redis and verified when it is not
        here (another machine trained it). A version that cannot be fetched or verified raises: the
        caller keeps the model it has, logs it, and counts it in ``imaginebot_model_syncs``."""
        from core.metrics import MODEL_SYNCS
        from core.model_versions import ModelRegistry

        assert self._redis is not None  # set by _promoted_version, which named this version
        try:
            folder, fetched = ModelRegistry(self.settings, self._redis, family=name).materialize(version)
        except Exception:
            MODEL_SYNCS.labels("failed").inc()
            raise
        MODEL_SYNCS.labels("fetched" if fetched else "local").inc()
        if fetched:
            log.info("fetched %s %s from Redis into %s (sha256 verified)", name, version, folder)
        engine = self._load_default(name, str(folder))
        self._versions[name] = version
        return engine


def _folder_of(folder: str | None, shipped: bool) -> str | None:
    """A catalogue entry's folder as a path: a shipped model's name is under ``training/shipped_models``."""
    if not shipped or folder is None:
        return folder
    from training.shipped import SHIPPED_DIR

    return str(SHIPPED_DIR / folder)
