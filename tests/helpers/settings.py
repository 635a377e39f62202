"""Settings for tests."""

from __future__ import annotations

from pathlib import Path

from core.settings import Settings


def make_settings(redis_url: str, data_dir: Path, **overrides: object) -> Settings:
    """Settings for tests: no .env, generous limits unless a test tightens them."""
    values: dict[str, object] = {
        "redis_url": redis_url,
        "data_dir": data_dir,
        "device": "cpu",
        "torch_threads": 1,  # the test worker shares 2 cores with the browser and other workers
        "default_steps": 4,
        "rate_limit_jobs": 1000,
        "max_queue_depth": 1000,
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]
