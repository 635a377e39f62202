"""Loads each engine once per worker process and hands out the loaded instance."""

from __future__ import annotations

import logging
import threading
import time

import redis

from core.settings import Settings
from worker.engines.base import Engine

log = logging.getLogger(__name__)


class EngineRegistry:
    """Lazily loaded engines, keyed by name. Thread-safe; loading happens at most once per name."""

    def __init__(self, settings: Settings, redis_client: redis.Redis | None = None) -> None:
        self.settings = settings
        self._engines: dict[str, Engine] = {}
        self._lock = threading.Lock()
        self._redis = redis_client
        self._dfgan_version: str | None = None  # registry version loaded; None: the configured default
        self._failed_version: str | None = None  # a promoted version that would not load (not retried)
        self._reload_lock = threading.Lock()

    def get(self, name: str) -> Engine:
        """The loaded engine ``name`` (loads it on first use).

        For ``dfgan``, first asks the model registry (one Redis GET) which version is promoted and
        swaps to it when it differs from the loaded one. A batch already drawing keeps the engine
        object it got, so it finishes on its version; the next batch gets the new one.
        """
        if name == "dfgan":
            self._follow_promoted()
        engine = self._engines.get(name)
        if engine is not None:
            return engine
        with self._lock:
            if name not in self._engines:
                started = time.perf_counter()
                self._engines[name] = self._load(name)
                log.info("loaded engine %s in %.1f s", name, time.perf_counter() - started)
            return self._engines[name]

    def loaded_versions(self) -> dict[str, str]:
        """Name -> version of the engines loaded so far (loads nothing; for the worker's heartbeat)."""
        return {name: engine.info.version for name, engine in list(self._engines.items())}

    def _load(self, name: str) -> Engine:
        s = self.settings
        if s.torch_threads > 0:
            import torch

            torch.set_num_threads(s.torch_threads)
        if name == "dfgan":
            from worker.engines.dfgan import DFGANEngine, resolve_default_checkpoint

            promoted = self._promoted_version()
            if promoted is not None:
                try:
                    return self._load_dfgan_version(promoted)
                except Exception:
                    log.exception("promoted DF-GAN %s cannot be loaded; using the default", promoted)
                    self._failed_version = promoted
            self._dfgan_version = None
            return DFGANEngine(resolve_default_checkpoint(s.dfgan_checkpoint), s.device)
        if name == "diffusion":
            from diffusers.utils import logging as diffusers_logging

            from worker.engines.diffusion import DiffusionEngine

            diffusers_logging.disable_progress_bar()  # bars in worker logs are noise

            return DiffusionEngine(
                s.diffusion_model,
                s.data_dir,
                device=s.device,
                dtype=s.diffusion_dtype,
                attention_slicing=s.diffusion_attention_slicing,
                cpu_offload=s.diffusion_cpu_offload,
                safety_checker=s.diffusion_safety_checker,
            )
        if name == "hf-api":
            from worker.engines.hf_api import HFApiEngine

            return HFApiEngine(s.hf_api_model, s.hf_api_token, s.hf_api_base_url, s.hf_api_timeout_s)
        raise ValueError(f"no engine called {name!r}")

    # --- hot reload of the promoted DF-GAN version -------------------------------------------------
    def _promoted_version(self) -> str | None:
        """The promoted DF-GAN version (one GET), or None when none is, or Redis is not configured."""
        if self._redis is None:
            if not self.settings.redis_url:
                return None
            from core.store import connect

            self._redis = connect(self.settings.redis_url)
        from worker.model_registry import PROMOTED_KEY

        try:
            raw = self._redis.get(PROMOTED_KEY)
        except redis.RedisError:
            log.warning("cannot read the promoted DF-GAN version; keeping the loaded one")
            return self._dfgan_version
        return None if raw is None else raw.decode()

    def _follow_promoted(self) -> None:
        """Swap the DF-GAN engine when the promoted version changed (loaded outside the lock)."""
        if "dfgan" not in self._engines:
            return  # the first load reads the promoted version itself
        wanted = self._promoted_version()
        if wanted == self._dfgan_version or (wanted is not None and wanted == self._failed_version):
            return
        # One thread loads; the others keep drawing with the current engine meanwhile.
        if not self._reload_lock.acquire(blocking=False):
            return
        try:
            self._swap_dfgan(wanted)
        finally:
            self._reload_lock.release()

    def _swap_dfgan(self, wanted: str | None) -> None:
        started = time.perf_counter()
        try:
            if wanted is None:  # promotion cleared (rolled back past the first): the default again
                from worker.engines.dfgan import DFGANEngine, resolve_default_checkpoint

                engine: Engine = DFGANEngine(
                    resolve_default_checkpoint(self.settings.dfgan_checkpoint), self.settings.device
                )
            else:
                engine = self._load_dfgan_version(wanted)
        except Exception:
            log.exception("promoted DF-GAN %s cannot be loaded; keeping %s", wanted, self._dfgan_version)
            self._failed_version = wanted
            return
        with self._lock:
            self._engines["dfgan"] = engine
            self._dfgan_version = wanted
        log.info("switched DF-GAN to %s in %.1f s", engine.info.version, time.perf_counter() - started)

    def _load_dfgan_version(self, version: str) -> Engine:
        """Load ``version`` from this machine's copy, fetched from Redis and verified when it is not
        here (another machine trained it). A version that cannot be fetched or verified raises: the
        caller keeps the model it has, logs it, and counts it in ``imaginebot_model_syncs``."""
        from core.metrics import MODEL_SYNCS
        from worker.engines.dfgan import DFGANEngine
        from worker.model_registry import ModelRegistry

        assert self._redis is not None  # set by _promoted_version, which named this version
        try:
            folder, fetched = ModelRegistry(self.settings, self._redis).materialize(version)
        except Exception:
            MODEL_SYNCS.labels("failed").inc()
            raise
        MODEL_SYNCS.labels("fetched" if fetched else "local").inc()
        if fetched:
            log.info("fetched DF-GAN %s from Redis into %s (sha256 verified)", version, folder)
        engine = DFGANEngine(str(folder), self.settings.device)
        self._dfgan_version = version
        return engine
