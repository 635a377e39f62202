"""The deployment files validate offline: Compose (``docker-compose config``), the Dockerfiles (a few
hadolint-style rules), and the Kubernetes manifests (``kubernetes-validate``'s bundled schemas).

There is no Docker engine or cluster here: nothing is built or started; see docs/scaling.md.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import pytest
import redis
import yaml

from core.embedded_redis import EmbeddedRedis
from core.task_contract import ALL_QUEUES, GENERATE_TASK, QUEUE_GPU, make_producer

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
KUBERNETES_VERSION = "1.30.0"
COMPOSE_SERVICES = {
    "redis", "worker-gpu", "worker-train", "worker-delivery", "bot-discord", "bot-telegram", "web", "flower"
}  # fmt: skip


# --- Compose ---------------------------------------------------------------------------------------


def _compose_config(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("docker-compose")
    if binary is None:
        if os.environ.get("CI"):  # .ci/run installs it: in CI a skip would hide an unchecked file
            pytest.fail("docker-compose is not installed; .ci/run should have installed it")
        pytest.skip("docker-compose is not installed (.ci/run installs Debian's docker-compose)")
    env_file = tmp_path / "compose.env"
    lines = (DEPLOY / ".env.example").read_text().splitlines()
    values = dict(line.split("=", 1) for line in lines if line and not line.startswith("#"))
    values.update(env)
    env_file.write_text("".join(f"{k}={v}\n" for k, v in values.items()))
    return subprocess.run(
        [binary, "-f", str(DEPLOY / "docker-compose.yml"), "--env-file", str(env_file), "config"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )


FILLED = {
    "REDIS_PASSWORD": "s3cret-redis",
    "IMAGINEBOT_WEB_ACCESS_PASSWORD": "letmein",
    "IMAGINEBOT_WEB_SECRET_KEY": "k" * 32,
}


@pytest.fixture(scope="module")
def compose(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The Compose file as ``docker-compose config`` resolves it with a filled-in .env."""
    result = _compose_config(tmp_path_factory.mktemp("compose"), **FILLED)
    assert result.returncode == 0, result.stderr
    return yaml.safe_load(result.stdout)


def test_compose_file_has_every_role(compose: dict[str, Any]) -> None:
    assert set(compose["services"]) == COMPOSE_SERVICES
    # A bot without its token would exit and be restarted forever: each starts only with its profile.
    assert compose["services"]["bot-discord"]["profiles"] == ["discord"]
    assert compose["services"]["bot-telegram"]["profiles"] == ["telegram"]


def test_compose_refuses_to_start_without_the_redis_password(tmp_path: Path) -> None:
    result = _compose_config(tmp_path, **{**FILLED, "REDIS_PASSWORD": ""})
    assert result.returncode != 0
    assert "REDIS_PASSWORD" in result.stderr


def test_compose_redis_is_durable_private_and_password_protected(compose: dict[str, Any]) -> None:
    redis_service = compose["services"]["redis"]
    command = " ".join(redis_service["command"])
    assert "--appendonly yes" in command
    assert "--maxmemory-policy noeviction" in command
    assert "--requirepass s3cret-redis" in command
    assert "ports" not in redis_service  # never published on the host
    assert list(redis_service["networks"]) == ["backend"]
    assert compose["networks"]["backend"]["internal"] is True
    for name, service in compose["services"].items():
        if name not in ("redis", "flower"):
            assert service["environment"]["IMAGINEBOT_REDIS_URL"] == "redis://:s3cret-redis@redis:6379/0"


def test_compose_gpu_workers_reserve_gpus_and_serve_the_gpu_queue(compose: dict[str, Any]) -> None:
    gpu = compose["services"]["worker-gpu"]
    devices = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["driver"] == "nvidia" and "gpu" in devices[0]["capabilities"]
    assert gpu["command"][:3] == ["worker", "--queues", QUEUE_GPU]
    assert "--gpus" in gpu["command"]
    queues = {s["command"][2] for s in compose["services"].values() if s.get("command", [""])[0] == "worker"}
    assert queues == set(ALL_QUEUES)


def test_compose_publishes_only_web_and_flower_and_only_on_loopback(compose: dict[str, Any]) -> None:
    published = {name: s["ports"] for name, s in compose["services"].items() if s.get("ports")}
    assert set(published) == {"web", "flower"}
    for ports in published.values():
        for port in ports:
            host_ip = port["host_ip"] if isinstance(port, dict) else str(port).rsplit(":", 2)[0]
            assert host_ip == "127.0.0.1", port


# --- Dockerfiles -----------------------------------------------------------------------------------


def _instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", path.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


@pytest.mark.parametrize("name", ["Dockerfile", "Dockerfile.cuda"])
def test_dockerfile_lint(name: str) -> None:
    """hadolint's most useful rules, checked here because hadolint itself is not installable offline."""
    instructions = _instructions(DEPLOY / name)
    words = [w for w, _ in instructions]
    known = {"FROM", "ARG", "ENV", "RUN", "WORKDIR", "COPY", "USER", "VOLUME", "EXPOSE", "ENTRYPOINT", "CMD"}
    assert set(words) <= known, set(words) - known
    base = dict(instructions)["FROM"]
    assert ":" in base and not base.endswith(":latest"), "DL3006/DL3007: pin the base image's tag"
    assert "USER" in words and words.index("USER") > max(i for i, w in enumerate(words) if w == "RUN"), (
        "DL3002: the image must end as a non-root user"
    )
    assert dict((w, a) for w, a in instructions if w == "USER")["USER"] not in ("root", "0")
    for word, args in instructions:
        assert word != "ADD", "DL3020: use COPY"
        if word == "RUN" and "apt-get install" in args:
            assert "--no-install-recommends" in args and "-y" in args, "DL3015"
        if word == "RUN" and "pip install" in args:
            assert "PIP_NO_CACHE_DIR=1" in dict(instructions)["ENV"] or "--no-cache-dir" in args, "DL3042"
        if word == "COPY":
            for source in args.split()[:-1]:
                assert (ROOT / source).exists(), f"COPY {source}: no such path in the repository"
        if word in ("ENTRYPOINT", "CMD"):
            assert args.startswith("["), "DL3025: JSON form, so signals reach the process"


@pytest.mark.parametrize("name", ["Dockerfile", "Dockerfile.cuda"])
def test_dockerfiles_install_the_pinned_torch(name: str) -> None:
    dependencies = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    pins = [d for d in dependencies if d.startswith(("torch==", "torchvision=="))]
    text = (DEPLOY / name).read_text()
    for pin in pins:
        assert pin in text, f"{name} must install {pin} like pyproject.toml"


# --- Kubernetes ------------------------------------------------------------------------------------


def _manifests() -> list[dict[str, Any]]:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    docs = []
    for resource in kustomization["resources"]:
        docs += [d for d in yaml.safe_load_all((K8S / resource).read_text()) if d]
    return docs


def test_kustomization_lists_every_manifest() -> None:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    files = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(kustomization["resources"]) == files


def test_manifests_validate_against_the_kubernetes_schemas() -> None:
    import kubernetes_validate

    checked = 0
    for doc in _manifests():
        if doc["apiVersion"].startswith("keda.sh/"):
            continue  # a CRD: checked by the next test
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
        checked += 1
    assert checked >= 10


def test_every_role_has_a_deployment_with_probes_on_real_endpoints() -> None:
    from bots.web.app import create_app
    from tests.helpers.settings import make_settings

    docs = _manifests()
    deployments = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Deployment"}
    assert set(deployments) == COMPOSE_SERVICES - {"redis", "flower"}
    assert any(d["kind"] == "StatefulSet" and d["metadata"]["name"] == "redis" for d in docs)
    web_routes = {
        str(rule)
        for rule in create_app(make_settings("redis://127.0.0.1:1/0", Path("/tmp"))).url_map.iter_rules()
    }
    for name, deployment in deployments.items():
        container = deployment["spec"]["template"]["spec"]["containers"][0]
        for probe in ("readinessProbe", "livenessProbe"):
            path = container[probe]["httpGet"]["path"]
            if name == "web":
                assert path in web_routes
            else:
                assert path == "/healthz"  # served by core.metrics.serve_metrics on the metrics port
        gpus = container["resources"].get("limits", {}).get("nvidia.com/gpu")
        assert (gpus == 1) == (name in ("worker-gpu", "worker-train")), name


def test_redis_statefulset_keeps_an_append_only_file_on_a_volume() -> None:
    redis_set = next(d for d in _manifests() if d["kind"] == "StatefulSet")
    args = " ".join(redis_set["spec"]["template"]["spec"]["containers"][0]["args"])
    assert "--appendonly yes" in args and "--maxmemory-policy noeviction" in args
    assert "--requirepass $(REDIS_PASSWORD)" in args
    assert redis_set["spec"]["volumeClaimTemplates"][0]["metadata"]["name"] == "data"


def test_keda_scaledobject_scales_gpu_workers_on_the_gpu_list() -> None:
    docs = _manifests()
    scaled = next(d for d in docs if d["kind"] == "ScaledObject")
    assert scaled["apiVersion"] == "keda.sh/v1alpha1"
    target = scaled["spec"]["scaleTargetRef"]["name"]
    assert target == "worker-gpu"
    assert any(d["kind"] == "Deployment" and d["metadata"]["name"] == target for d in docs)
    (trigger,) = scaled["spec"]["triggers"]
    assert trigger["type"] == "redis"
    assert trigger["metadata"]["listName"] == QUEUE_GPU
    assert int(trigger["metadata"]["listLength"]) >= 1
    auth_name = trigger["authenticationRef"]["name"]
    auth = next(
        d for d in docs if d["kind"] == "TriggerAuthentication" and d["metadata"]["name"] == auth_name
    )
    secret = next(d for d in docs if d["kind"] == "Secret")
    for ref in auth["spec"]["secretTargetRef"]:
        assert ref["name"] == secret["metadata"]["name"] and ref["key"] in secret["stringData"]


def test_celery_keeps_waiting_gpu_tasks_in_the_redis_list_keda_reads(tmp_path: Path) -> None:
    """The key KEDA watches is the one Celery's Redis transport really pushes to: send a task, look."""
    trigger = next(d for d in _manifests() if d["kind"] == "ScaledObject")["spec"]["triggers"][0]
    list_name = trigger["metadata"]["listName"]
    with EmbeddedRedis(tmp_path / "redis", persist=False) as server:
        producer = make_producer(server.url)
        client = redis.Redis.from_url(server.url)
        assert client.llen(list_name) == 0
        for _ in range(3):
            producer.send_task(GENERATE_TASK, args=["0" * 16], queue=QUEUE_GPU)
        assert client.type(list_name) == b"list"
        assert client.llen(list_name) == 3
        producer.close()
        client.close()


# --- Grafana ---------------------------------------------------------------------------------------


def test_grafana_dashboard_queries_only_metrics_imaginebot_exports() -> None:
    import json

    from prometheus_client import REGISTRY

    import core.metrics  # noqa: F401 - registers the shared metrics
    import worker.metrics  # noqa: F401 - defines the GPU memory collector

    exported = {name for names in list(REGISTRY._collector_to_names.values()) for name in names}
    exported |= {"imaginebot_queue_depth", "imaginebot_gpu_memory_bytes"}  # collectors read at scrape time
    dashboard = json.loads((DEPLOY / "grafana-dashboard.json").read_text())
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    assert len(exprs) >= 10
    used = {name for expr in exprs for name in re.findall(r"\bimaginebot_[a-z_]+", expr)}
    unknown = sorted(used - exported)
    assert unknown == [], f"the dashboard queries metrics nobody exports: {unknown}"
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
