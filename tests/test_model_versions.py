"""The DF-GAN model registry (Redis + folders) and the workers' hot reload of the promoted version."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from core.embedded_redis import EmbeddedRedis
from core.model_versions import ModelRegistry, RegistryError, check_version, version_folder
from core.settings import Settings
from tests.helpers.settings import make_settings


@pytest.fixture
def isolated(redis_server: EmbeddedRedis, tmp_path: Path) -> Iterator[Settings]:
    """Settings on database 6 of the session Redis (emptied) with a private data dir."""
    url = redis_server.url.rsplit("/", 1)[0] + "/6"
    client = redis.Redis.from_url(url)
    client.flushdb()
    yield make_settings(url, tmp_path / "data", engines="dfgan")
    client.close()


def _checkpoint(folder: Path, seed: int) -> Path:
    """A real (untrained, tiny) DF-GAN checkpoint folder."""
    from training.dfgan.checkpoint import build_generator, save_checkpoint
    from training.dfgan.config import DFGANConfig

    config = DFGANConfig(ngf=4, ndf=4, seed=seed)
    return save_checkpoint(folder, build_generator(config), config, {"step": 1})


def _registry(settings: Settings) -> ModelRegistry:
    assert settings.redis_url
    return ModelRegistry(settings, redis.Redis.from_url(settings.redis_url))


def test_register_list_promote_and_rollback(isolated: Settings, tmp_path: Path) -> None:
    reg = _registry(isolated)
    ckpt = _checkpoint(tmp_path / "run" / "checkpoint", seed=1)
    first = reg.new_version_name("shapes", when=0)
    assert first == "dfgan-shapes-19700101T000000Z"
    reg.register(first, ckpt, "shapes", {"all": 0.25}, run_id="r1")
    second = reg.new_version_name("shapes", when=0)
    assert second == "dfgan-shapes-19700101T000000Z-2"  # same second: a suffix, never an overwrite
    reg.register(second, ckpt, "shapes", {"all": 0.5}, parent=first)

    assert [v.version for v in reg.list()] == [first, second]
    folder = version_folder(isolated, second)
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "generator.safetensors", "model.json"]
    assert '"version": "' + second + '"' in (folder / "config.json").read_text()
    assert reg.promoted() is None
    reg.promote(first)
    reg.promote(second)
    assert reg.promoted_entry() is not None and reg.promoted_entry().metrics == {"all": 0.5}
    assert reg.rollback() == first
    assert reg.rollback() is None  # past the first promotion: back to the configured default
    with pytest.raises(RegistryError):
        reg.rollback()


@pytest.mark.parametrize(
    "name",
    ["../etc", "dfgan-shapes-x", "dfgan-../../x-20260101T000000Z", "", "dfgan-shapes-20260101T000000Z\n"],
)
def test_nothing_but_a_version_name_becomes_a_folder(isolated: Settings, name: str) -> None:
    with pytest.raises(RegistryError):
        check_version(name)
    with pytest.raises(RegistryError):
        _registry(isolated).promote(name)


def test_promoting_an_unknown_version_is_refused(isolated: Settings) -> None:
    with pytest.raises(RegistryError, match="Unknown DF-GAN version"):
        _registry(isolated).promote("dfgan-shapes-20260101T000000Z")


def test_engine_registry_swaps_to_the_promoted_version_between_batches(
    isolated: Settings, tmp_path: Path
) -> None:
    from worker.engines.loaded import LoadedEngines

    reg = _registry(isolated)
    engines = LoadedEngines(isolated)
    before = engines.get("dfgan")
    default = before.info.version  # nothing promoted: the configured default (shipped or random-init)
    assert not default.startswith("dfgan-shapes-2")  # not a registry version
    assert engines.get("dfgan") is before  # unchanged promotion: the same loaded object

    version = reg.new_version_name("shapes")
    reg.register(version, _checkpoint(tmp_path / "ckpt", seed=2), "shapes", {"all": 0.1})
    reg.promote(version)
    after = engines.get("dfgan")
    assert after.info.version == version
    assert before.info.version == default != version  # a batch holding the old engine keeps its version

    reg.rollback()
    assert engines.get("dfgan").info.version == default


def test_a_promoted_version_that_cannot_load_keeps_the_current_engine(isolated: Settings) -> None:
    from core.model_versions import PROMOTED_KEY
    from worker.engines.loaded import LoadedEngines

    engines = LoadedEngines(isolated)
    before = engines.get("dfgan")
    assert isolated.redis_url
    redis.Redis.from_url(isolated.redis_url).set(PROMOTED_KEY, "dfgan-shapes-20260101T000000Z")  # no files
    assert engines.get("dfgan") is before


def test_a_promoted_version_reaches_a_worker_with_another_data_dir_through_redis(
    isolated: Settings, tmp_path: Path
) -> None:
    """The train worker's machine and a GPU worker's machine share Redis and nothing else."""
    import hashlib

    from core.metrics import MODEL_SYNCS
    from core.model_versions import blob_key
    from worker.engines.loaded import LoadedEngines

    trainer_side = _registry(isolated)
    version = trainer_side.new_version_name("shapes")
    entry = trainer_side.register(version, _checkpoint(tmp_path / "ckpt", seed=3), "shapes", {"all": 0.2})
    assert set(entry.files) == {"config.json", "generator.safetensors"}
    elsewhere = isolated.model_copy(update={"data_dir": tmp_path / "other-machine"})
    assert not version_folder(elsewhere, version).exists()

    engines = LoadedEngines(elsewhere)
    default = engines.get("dfgan").info.version
    fetched_before = MODEL_SYNCS.labels("fetched")._value.get()
    trainer_side.promote(version)
    assert engines.get("dfgan").info.version == version  # fetched, verified, swapped in
    assert MODEL_SYNCS.labels("fetched")._value.get() == fetched_before + 1
    local = version_folder(elsewhere, version) / "generator.safetensors"
    assert hashlib.sha256(local.read_bytes()).hexdigest() == entry.files["generator.safetensors"]

    # A copy in Redis that does not match its checksum is never loaded: the worker keeps its model.
    second = trainer_side.new_version_name("shapes", when=1)
    trainer_side.register(second, _checkpoint(tmp_path / "ckpt2", seed=4), "shapes", {"all": 0.3})
    client = trainer_side.redis
    weights = bytearray(client.get(blob_key(second, "generator.safetensors")) or b"")
    weights[-1] ^= 0xFF
    client.set(blob_key(second, "generator.safetensors"), bytes(weights))
    failed_before = MODEL_SYNCS.labels("failed")._value.get()
    trainer_side.promote(second)
    assert engines.get("dfgan").info.version == version
    assert MODEL_SYNCS.labels("failed")._value.get() == failed_before + 1
    assert not version_folder(elsewhere, second).exists()
    trainer_side.rollback()
    trainer_side.rollback()
    assert engines.get("dfgan").info.version == default
