"""The ``imaginebot`` command line, run as a real process."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from core.embedded_redis import EmbeddedRedis


def _run(args: list[str], env: dict[str, str], timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "worker.cli", *args], env=env, capture_output=True, text=True, timeout=timeout
    )


def _assert_python_runs(code: str) -> None:
    """Run ``code`` in a fresh interpreter (so ``sys.modules`` shows what it alone imported): its
    asserts must hold."""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


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


def test_imagine_starts_from_a_picture(tmp_path: Path) -> None:
    picture = tmp_path / "start.png"
    Image.new("RGB", (48, 32), (200, 30, 30)).save(picture)
    out = tmp_path / "pair.png"
    args = ["imagine", "a red circle", "--image", str(picture), "--strength", "0.5", "--steps", "2"]
    result = _run([*args, "--engine", "diffusion", "--out", str(out)], _clean_env(tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert Image.open(out).format == "PNG"


def test_imagine_refuses_a_bad_picture_or_lora_before_starting_anything(tmp_path: Path) -> None:
    not_an_image = tmp_path / "notes.txt"
    not_an_image.write_text("hello")
    cases = {
        ("--image", str(not_an_image)): "notes.txt: That file is not an image I can read",
        ("--image", str(tmp_path / "missing.png")): "cannot read",
        ("--lora", "../secret"): "not a LoRA name",
    }
    for extra, message in cases.items():
        result = _run(["imagine", "a cat", *extra], _clean_env(tmp_path), timeout=60)
        assert result.returncode == 2, result.stdout + result.stderr
        assert message in " ".join(result.stdout.split()), result.stdout
    assert not (tmp_path / "data" / "redis").exists()


def test_every_command_has_help(tmp_path: Path) -> None:
    top = _run(["--help"], _clean_env(tmp_path), timeout=60)
    assert top.returncode == 0
    for command in ("up", "worker", "web", "imagine", "train", "eval", "discord", "telegram"):
        assert command in top.stdout
        assert _run([command, "--help"], _clean_env(tmp_path), timeout=60).returncode == 0


def test_every_command_in_the_table_has_its_own_help() -> None:
    from typer.testing import CliRunner

    from worker.cli import COMMANDS, app

    for command in [*COMMANDS, "models list", "models promote", "models rollback"]:
        result = CliRunner().invoke(app, [*command.split(), "--help"], terminal_width=200)
        assert result.exit_code == 0 and "Usage:" in result.output, (command, result.output)


def test_the_top_level_help_lists_every_command_without_loading_torch() -> None:
    code = (
        "import sys\n"
        "from typer.testing import CliRunner\n"
        "from worker.cli import COMMANDS, app\n"
        "result = CliRunner().invoke(app, ['--help'], terminal_width=200)\n"
        "assert result.exit_code == 0, result.output\n"
        "missing = [c for c in COMMANDS if f' {c} ' not in result.output]\n"
        "assert not missing, missing\n"
        "heavy = [m for m in ('torch', 'diffusers', 'flask', 'discord', 'telegram') if m in sys.modules]\n"
        "assert not heavy, f'--help imported {heavy}'\n"
    )
    _assert_python_runs(code)


def test_a_mistyped_command_gets_a_suggestion(tmp_path: Path) -> None:
    result = _run(["modls"], _clean_env(tmp_path), timeout=60)
    assert result.returncode == 2 and "Did you mean 'models'?" in result.stdout + result.stderr


def test_worker_without_redis_url_explains_what_to_set(tmp_path: Path) -> None:
    result = _run(["worker"], _clean_env(tmp_path), timeout=60)
    assert result.returncode == 2 and "IMAGINEBOT_REDIS_URL" in result.stdout


def test_retrain_cancel_answers_a_bad_or_unknown_run_id_clearly(
    redis_server: EmbeddedRedis, tmp_path: Path
) -> None:
    env = {**_clean_env(tmp_path), "IMAGINEBOT_REDIS_URL": redis_server.url}
    bad = _run(["retrain", "--cancel", "../etc"], env, timeout=60)
    assert bad.returncode == 1 and "16 hex digits" in bad.stdout, bad.stdout + bad.stderr
    unknown = _run(["retrain", "--cancel", "0123456789ABCDEF"], env, timeout=60)
    assert unknown.returncode == 1 and "No training run 0123456789abcdef" in unknown.stdout


def test_front_ends_never_import_torch() -> None:
    code = (
        "import sys, bots.web.app, bots.web.server, bots.web.send, core.job_client, core.validation, "
        "core.compose, worker.cli, bots.web.cli, bots.discord.cli, bots.telegram.cli, bots.cli.imagine, "
        "bots.cli.retrain, bots.cli.models, worker.up_cli; assert 'torch' not in sys.modules"
    )
    _assert_python_runs(code)


def test_bots_without_a_token_say_which_setting_is_missing(tmp_path: Path) -> None:
    for command, setting in (
        ("discord", "IMAGINEBOT_DISCORD_TOKEN"),
        ("telegram", "IMAGINEBOT_TELEGRAM_TOKEN"),
    ):
        result = _run([command], _clean_env(tmp_path), timeout=60)
        assert result.returncode == 2 and setting in result.stdout


def test_up_serves_the_web_chat_and_stops_everything_on_sigterm(tmp_path: Path) -> None:
    import re
    import signal
    import time

    import requests

    from core.embedded_redis import free_port

    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "worker.cli", "up", "--port", str(port)],
        env=_clean_env(tmp_path),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=tmp_path,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                requests.get(base + "/api/health", timeout=2).raise_for_status()
                break
            except requests.RequestException:
                assert time.monotonic() < deadline and proc.poll() is None, "web chat did not come up"
                time.sleep(0.2)
        job = requests.post(
            base + "/api/imagine",
            json={"conversation_id": "up-test-1", "text": "a red circle --steps 2"},
            timeout=10,
        ).json()["job"]
        while not requests.get(f"{base}/api/jobs/{job['id']}", timeout=5).json()["job"]["delivered"]:
            assert time.monotonic() < deadline + 120, "job not delivered"
            time.sleep(0.2)
        assert requests.get(f"{base}/api/jobs/{job['id']}/pair.png", timeout=5).status_code == 200
    finally:
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=90)
    assert proc.returncode == 0, output
    assert "imaginebot is up" in output and "stopped." in output
    # The embedded Redis kept its append-only file in the data dir, and no child outlived `up`.
    redis_dir = tmp_path / "data" / "redis"  # Redis 6 writes one file, Redis 7 a folder of them
    assert (redis_dir / "appendonly.aof").exists() or any((redis_dir / "appendonlydir").glob("*.aof"))
    redis_port = re.search(r"redis://127.0.0.1:(\d+)", output)
    assert redis_port is not None
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", int(redis_port.group(1))), timeout=2).close()
    leftovers = []
    for proc_dir in Path("/proc").iterdir():
        try:
            if proc_dir.name.isdigit() and Path(os.readlink(proc_dir / "cwd")) == tmp_path:
                leftovers.append(proc_dir.name)
        except OSError:
            continue  # gone meanwhile, or not ours to read
    assert leftovers == []


def test_up_runs_deliveries_apart_from_drawing_and_gives_each_child_its_own_metrics_port() -> None:
    from core.settings import Settings
    from worker.up_cli import DELIVERY_CONCURRENCY, up_children

    settings = Settings(  # type: ignore[call-arg]
        _env_file=None, redis_url="redis://127.0.0.1:1/0", metrics_port=9100, telegram_token="1:x"
    )
    children = {c.name: c for c in up_children(settings)}
    assert set(children) == {"worker gpu", "worker delivery", "worker train", "telegram bot"}
    assert children["worker gpu"].queues == ["gpu"]
    delivery = children["worker delivery"].argv
    assert delivery[delivery.index("--queues") + 1] == "delivery"
    assert delivery[delivery.index("--concurrency") + 1] == str(DELIVERY_CONCURRENCY) != "1"
    ports = [(c.env or {})["IMAGINEBOT_METRICS_PORT"] for c in children.values()]
    assert sorted(ports) == ["9101", "9102", "9103", "9104"]  # the web chat serves its own /metrics
