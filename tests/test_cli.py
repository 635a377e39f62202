"""The ``imaginebot`` command line, run as a real process."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from PIL import Image


def _run(args: list[str], env: dict[str, str], timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "worker.cli", *args], env=env, capture_output=True, text=True, timeout=timeout
    )


def _clean_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("IMAGINEBOT_")}
    env.update(
        IMAGINEBOT_DATA_DIR=str(tmp_path / "data"), IMAGINEBOT_DEVICE="cpu", IMAGINEBOT_TORCH_THREADS="1"
    )
    return env


def test_imagine_runs_one_prompt_through_an_embedded_queue(tmp_path: Path) -> None:
    out = tmp_path / "pair.png"
    result = _run(
        ["imagine", "a red circle", "--seed", "3", "--steps", "2", "--out", str(out)], _clean_env(tmp_path)
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "embedded Redis" in result.stdout and f"wrote {out}" in result.stdout.replace("\n", "")
    pair = Image.open(out)
    assert pair.format == "PNG" and pair.width > 2 * 256


def test_imagine_refuses_bad_input_before_starting_anything(tmp_path: Path) -> None:
    result = _run(["imagine", "a cat", "--steps", "0"], _clean_env(tmp_path), timeout=60)
    assert result.returncode == 2
    assert "--steps must be between 1 and 100" in result.stdout
    assert not (tmp_path / "data" / "redis").exists()


def test_every_command_has_help(tmp_path: Path) -> None:
    top = _run(["--help"], _clean_env(tmp_path), timeout=60)
    assert top.returncode == 0
    for command in ("up", "worker", "web", "imagine", "train", "eval"):
        assert command in top.stdout
        assert _run([command, "--help"], _clean_env(tmp_path), timeout=60).returncode == 0


def test_worker_without_redis_url_explains_what_to_set(tmp_path: Path) -> None:
    result = _run(["worker"], _clean_env(tmp_path), timeout=60)
    assert result.returncode == 2 and "IMAGINEBOT_REDIS_URL" in result.stdout


def test_front_ends_never_import_torch() -> None:
    code = (
        "import sys, bots.web.app, bots.web.server, bots.web.send, core.queue, core.validation, "
        "core.compose, "
        "worker.cli; assert 'torch' not in sys.modules, 'torch imported'"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
