"""``imaginebot worker --gpus``: one worker process per GPU, each seeing only its GPU, each its own
Celery node; run here on CPU with two processes (``--gpus 0,1``) against a real Redis."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
from pathlib import Path

import pytest
import requests

from core.embedded_redis import EmbeddedRedis, free_port
from core.job_client import QueueClient
from core.jobs import Conversation, JobRequest
from core.settings import Settings
from core.task_contract import make_producer
from tests.helpers.processes import worker_subprocess
from tests.helpers.settings import make_settings
from tests.helpers.waiting import eventually
from worker.gpus import GpuSpecError, child_env, node_name, parse_gpus


def test_gpu_spec_parsing() -> None:
    assert parse_gpus("0,1") == ["0", "1"]
    assert parse_gpus(" 2 , 3 ") == ["2", "3"]
    assert parse_gpus("all", count=lambda: 3) == ["0", "1", "2"]
    for bad in ("", "x", "0,0", "-1", "0;1"):
        with pytest.raises(GpuSpecError):
            parse_gpus(bad)
    with pytest.raises(GpuSpecError, match="no GPU"):
        parse_gpus("all", count=lambda: 0)


def test_each_child_sees_one_gpu_and_its_own_metrics_port() -> None:
    env = child_env({"PATH": "/bin", "CUDA_VISIBLE_DEVICES": "0,1,2,3"}, "3", 1, 9100)
    assert env["CUDA_VISIBLE_DEVICES"] == "3"
    assert env["IMAGINEBOT_METRICS_PORT"] == "9101"
    assert "IMAGINEBOT_METRICS_PORT" not in child_env({}, "0", 0, None)
    assert node_name("1", "box") == "gpu1@box"


Children = dict[int, dict[str, str]]  # pid -> environment


def _children(parent: int) -> Children:
    """Live child processes of ``parent``: pid -> environment (from /proc)."""
    out = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            if int(fields[1]) != parent or fields[0] == "Z":
                continue
            raw = (entry / "environ").read_bytes().split(b"\0")
        except (OSError, IndexError, ValueError):
            continue
        env = dict(item.decode(errors="replace").split("=", 1) for item in raw if b"=" in item)
        out[int(entry.name)] = env
    return out


def _gpus_seen(children: Children) -> list[str | None]:
    """The GPU each child sees, sorted."""
    return sorted(e.get("CUDA_VISIBLE_DEVICES") for e in children.values())


def _assert_one_child_per_gpu(parent: int, base_port: int) -> Children:
    """Each child sees only its GPU and serves metrics on its own port; the children."""
    children = _children(parent)
    assert _gpus_seen(children) == ["0", "1"]
    assert sorted(e.get("IMAGINEBOT_METRICS_PORT") for e in children.values()) == [
        str(base_port), str(base_port + 1)
    ]  # fmt: skip
    for port in (base_port, base_port + 1):
        assert requests.get(f"http://127.0.0.1:{port}/healthz", timeout=10).text == "ok\n"
    return children


def _assert_jobs_are_drawn(settings: Settings) -> None:
    """Four DF-GAN jobs submitted from the command line are all done."""
    client = QueueClient(settings)
    jobs = [
        client.submit(
            JobRequest(prompt=f"a red circle {i}", engines=["dfgan"], user="cli:gpus",
                       conversation=Conversation(platform="cli", chat_id="cli"))
        ).id
        for i in range(4)
    ]  # fmt: skip
    for job_id in jobs:
        assert client.wait(job_id, timeout_s=180).status.value == "done"


def _assert_a_killed_child_comes_back(
    parent: subprocess.Popen[bytes], children: dict[int, dict[str, str]]
) -> None:
    """A child that dies is started again, on the same GPU; the parent lives on."""
    victim = next(pid for pid, e in children.items() if e.get("CUDA_VISIBLE_DEVICES") == "1")
    os.kill(victim, signal.SIGKILL)

    def replaced() -> bool:
        now = _children(parent.pid)
        return victim not in now and _gpus_seen(now) == ["0", "1"]

    eventually(replaced, 60, "the killed GPU 1 worker restarted")
    assert parent.poll() is None


@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="reads child environments from /proc")
def test_worker_gpus_runs_one_process_per_gpu(tmp_path: Path, data_dir: Path) -> None:
    with EmbeddedRedis(tmp_path / "redis", persist=False) as server:
        base_port = free_port()
        settings = make_settings(server.url, data_dir, metrics_port=base_port)
        parent = worker_subprocess(settings, "gpu,delivery", "--gpus", "0,1")
        producer = make_producer(server.url)
        try:
            host = socket.gethostname()
            nodes = {node_name("0", host), node_name("1", host)}

            def answering() -> set[str]:
                replies = {name for reply in producer.control.ping(timeout=1.0) for name in reply}
                return replies if replies >= nodes else set()

            assert eventually(answering, 240, "both GPU workers answering ping") == nodes
            children = _assert_one_child_per_gpu(parent.pid, base_port)
            _assert_jobs_are_drawn(settings)
            _assert_a_killed_child_comes_back(parent, children)

            parent.send_signal(signal.SIGTERM)  # warm shutdown of both children, then the parent exits
            assert parent.wait(timeout=120) == 0
            assert _children(parent.pid) == {}
        finally:
            producer.close()
            if parent.poll() is None:
                for pid in _children(parent.pid):
                    os.kill(pid, signal.SIGKILL)
                parent.kill()
                parent.wait(timeout=30)
