"""Loads each engine once per worker process and hands out the loaded instance."""

from __future__ import annotations

import logging
import threading
import time

from core.settings import Settings
from worker.engines.base import Engine

log = logging.getLogger(__name__)


class EngineRegistry:
    """Lazily loaded engines, keyed by name. Thread-safe; loading happens at most once per name."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._engines: dict[str, Engine] = {}
        self._lock = threading.Lock()

    def get(self, name: str) -> Engine:
        """The loaded engine ``name`` (loads it on first use)."""
        engine = self._engines.get(name)
        if engine is not None:
            return engine
        with self._lock:
            if name not in self._engines:
                started = time.perf_counter()
                self._engines[name] = self._load(name)
                log.info("loaded engine %s in %.1f s", name, time.perf_counter() - started)
            return self._engines[name]

    def _load(self, name: str) -> Engine:
        s = self.settings
        if s.torch_threads > 0:
            import torch

            torch.set_num_threads(s.torch_threads)
        if name == "dfgan":
            from worker.engines.dfgan import DFGANEngine, resolve_default_checkpoint

            return DFGANEngine(resolve_default_checkpoint(s.dfgan_checkpoint), s.device)
        if name == "diffusion":
            from diffusers.utils import logging as diffusers_logging

            from worker.engines.diffusion import DiffusionEngine

            diffusers_logging.disable_progress_bar()  # bars in worker logs are noise

            return DiffusionEngine(s.diffusion_model, s.data_dir, device=s.device)
        if name == "hf-api":
            from worker.engines.hf_api import HFApiEngine

            return HFApiEngine(s.hf_api_model, s.hf_api_token, s.hf_api_base_url, s.hf_api_timeout_s)
        raise ValueError(f"no engine called {name!r}")
