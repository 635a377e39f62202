"""Admin retraining as a worker task: refusal, progress, evaluation gate, hot reload, resume after a kill.

Real Redis (database 7 of the session server, emptied per test), real ``imaginebot worker``
processes for the ``train`` and ``gpu`` queues, a tiny DF-GAN (ngf=ndf=4, 64 shapes images) so a
run takes seconds on a CPU. Short lease and visibility timeout, as in test_queue_durability.py.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import pytest
import redis

from core.commands import RetrainRequest
from core.embedded_redis import EmbeddedRedis
from core.errors import InputError
from core.job_client import QueueClient
from core.jobs import Conversation, EngineResult, JobStatus
from core.model_versions import ModelRegistry
from core.settings import Settings
from core.train_runs import TrainRun, TrainRunStatus
from core.training_client import TrainingClient
from core.validation import request_from_text
from tests.helpers.databases import emptied_database
from tests.helpers.processes import stop_process, worker_subprocess
from tests.helpers.settings import make_settings
from training.shipped import SHIPPED_DFGAN, SHIPPED_DIFFUSION

ADMIN = "admin-conversation-1"
TINY = {"ngf": 4, "ndf": 4, "batch_size": 8, "checkpoint_every": 5, "ema_decay": 0.9}


@pytest.fixture
def isolated(redis_server: EmbeddedRedis, tmp_path: Path) -> Settings:
    """Settings on database 7 (emptied), a private data dir, dfgan only, short lease and timeouts."""
    return make_settings(
        emptied_database(redis_server, 7),
        tmp_path / "data",
        engines="dfgan",
        admin_ids=f"web:{ADMIN},discord:42",
        job_lease_s=3.0,
        broker_visibility_timeout_s=4,
        progress_interval_s=0.3,
    )


def _admin_run(
    client: TrainingClient, max_steps: int, from_scratch: bool = True, **options: object
) -> TrainRun:
    """A tiny run (from scratch unless asked: TINY is its own architecture)."""
    return client.submit_retrain(
        RetrainRequest(dataset="shapes", epochs=1, from_scratch=from_scratch),
        f"web:{ADMIN}",
        Conversation(platform="web", chat_id=ADMIN),
        max_steps,
        config=TINY,
        count=64,
        eval_count=32,
        **options,  # type: ignore[arg-type]
    )


def _follow(client: TrainingClient, run_id: str, timeout_s: float) -> tuple[TrainRun, list[TrainRun]]:
    """Poll until the run finishes; returns the final record and every running record seen."""
    seen: list[TrainRun] = []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        run = client.status(run_id)
        if run.status.finished:
            return run, seen
        if run.status == TrainRunStatus.RUNNING and run.step > 0:
            seen.append(run)
        time.sleep(0.1)
    raise AssertionError(f"run {run_id} not finished in {timeout_s} s: {client.status(run_id)}")


def _draw(queue: QueueClient, settings: Settings, seed: int, engine: str = "dfgan") -> EngineResult:
    """One job through the running GPU worker; the engine's result (its version says who drew it)."""
    request = request_from_text(
        f"a red circle --engine {engine} --steps 2 --seed {seed}",
        settings,
        "web:drawer",
        Conversation(platform="web", chat_id="drawer-chat"),
    )
    record = queue.wait(queue.submit(request).id, timeout_s=180)
    assert record.status == JobStatus.DONE, record.error
    return record.results[0]


def test_non_admins_cannot_retrain_from_core_or_the_web_chat(isolated: Settings) -> None:
    from bots.web.app import create_app

    client = TrainingClient(isolated)
    with pytest.raises(InputError) as refused:
        client.submit_retrain(
            RetrainRequest(dataset="shapes", epochs=1),
            "web:someone-else",
            Conversation(platform="web", chat_id="x"),
        )
    assert refused.value.code == "not_admin"
    with pytest.raises(InputError) as unknown:
        client.submit_retrain(
            RetrainRequest(dataset="../etc", epochs=1),
            f"web:{ADMIN}",
            Conversation(platform="web", chat_id=ADMIN),
        )
    assert unknown.value.code == "unknown_dataset"
    assert client.redis.llen("train") == 0 and not list(client.redis.scan_iter("ib:trainrun:*"))

    web = create_app(isolated).test_client()
    for cid, text, status, code in [
        ("someone-else-1", "/retrain dataset:shapes epochs:2", 403, "not_admin"),
        (ADMIN, "/retrain dataset:../../etc epochs:2", 400, "unknown_dataset"),
        (ADMIN, "/retrain dataset:shapes epochs:0", 400, "epochs_out_of_range"),
    ]:
        resp = web.post("/api/imagine", json={"conversation_id": cid, "text": text})
        assert resp.status_code == status and resp.get_json()["code"] == code, resp.get_json()
    assert client.redis.llen("train") == 0

    resp = web.post(
        "/api/imagine", json={"conversation_id": ADMIN, "text": "/retrain dataset:shapes epochs:2"}
    )
    assert resp.status_code == 202, resp.get_json()
    run = client.status(resp.get_json()["run"]["id"])
    assert run.id in resp.get_json()["message"]  # the page shows it as the bot's answer
    assert (run.status, run.dataset, run.epochs, run.requested_by) == ("queued", "shapes", 2, f"web:{ADMIN}")
    assert client.redis.llen("train") == 1  # the task waits on the train queue, not the gpu one
    messages = web.get(f"/api/conversations/{ADMIN}").get_json()["messages"]
    assert messages[-1]["role"] == "bot" and run.id in messages[-1]["text"]


def _low_scoring_version(registry: ModelRegistry, tmp_path: Path) -> str:
    """Register and promote an untrained tiny version that claims a score of 0: anything beats it."""
    from training.dfgan.checkpoint import build_generator, save_checkpoint
    from training.dfgan.config import DFGANConfig

    config = DFGANConfig(ngf=4, ndf=4)
    folder = save_checkpoint(tmp_path / "untrained", build_generator(config), config)
    version = registry.new_version_name("shapes", when=0)
    registry.register(version, folder, "shapes", {"all": 0.0})
    registry.promote(version)
    return version


def test_admin_run_reports_progress_gates_and_reaches_the_running_gpu_worker(
    isolated: Settings, tmp_path: Path
) -> None:
    client = TrainingClient(isolated)
    queue = QueueClient(isolated)
    registry = ModelRegistry(isolated, client.redis)
    gpu = worker_subprocess(isolated, queues="gpu,delivery")
    trainer = worker_subprocess(isolated, queues="train")
    try:
        default = _draw(queue, isolated, 1).version  # nothing promoted: the configured default
        low = _low_scoring_version(registry, tmp_path)
        assert _draw(queue, isolated, 2).version == low != default  # hot reload, no restart

        # 1. The promoted version's stored score is 0: the gate passes and the new version is promoted.
        run, seen = _follow(client, _admin_run(client, max_steps=15).id, timeout_s=120)
        assert run.status == TrainRunStatus.DONE, run.error
        assert seen and all(r.total == 15 and r.eta_s is not None and "loss_d" in r.losses for r in seen)
        assert run.step == 15 and run.resumed_from is None and run.attempts == 1
        assert (run.gate, run.promoted, run.baseline, run.baseline_version) == ("passed", True, 0.0, low)
        assert 0.0 <= run.metrics["all"] <= 1.0 and set(run.metrics) >= {"colour", "shape", "all"}
        assert run.version is not None and run.version.startswith("dfgan-shapes-")
        assert registry.promoted() == run.version
        entry = registry.get(run.version)
        assert entry is not None and entry.metrics == run.metrics and entry.run_id == run.id
        assert (Path(entry.folder) / "generator.safetensors").is_file()
        assert Path(str(run.loss_curve)).is_file() and Path(str(run.sample_grid)).is_file()

        # The gpu worker, never restarted, draws the next job with the new version.
        assert _draw(queue, isolated, 3).version == run.version
        assert gpu.poll() is None

        # 2. The promoted version now claims a perfect score: the next run fails the gate.
        registry.set_metrics(run.version, {**run.metrics, "all": 1.0})
        second, _ = _follow(client, _admin_run(client, max_steps=5).id, timeout_s=120)
        assert second.status == TrainRunStatus.DONE, second.error
        assert (second.gate, second.promoted, second.baseline) == ("failed", False, 1.0)
        assert (run.parent, second.parent) == (low, run.version) and second.version != run.version
        assert registry.promoted() == run.version  # registered, not promoted
        assert [v.version for v in registry.list()] == [low, run.version, second.version]
        assert _draw(queue, isolated, 4).version == run.version
    finally:
        stop_process(trainer)
        stop_process(gpu)
    events = queue.history.read("web", ADMIN)
    texts = [e["text"] for e in events]
    assert any(run.id in t and "promoted" in t for t in texts)
    # The loss curve so far at 25/50/75 %, then the end-of-run pictures: the loss curve and old (the
    # version promoted before) vs new.
    pictures = [e for e in events if e.get("run_id") == run.id and "image_url" in e]
    assert [e["image_url"] for e in pictures] == [
        *(f"/api/runs/{run.id}/progress-{p}.png" for p in (25, 50, 75)),
        f"/api/runs/{run.id}/loss-curve.png",
        f"/api/runs/{run.id}/old-vs-new.png",
    ]
    assert f"{low} (old) vs {run.version} (new)" in pictures[-1]["text"]
    assert queue.images.get(queue.images.key(run.id, "old-vs-new")) is not None
    assert any(second.id in t and "kept the current model" in t for t in texts)


def test_a_killed_training_worker_is_resumed_from_its_checkpoint_and_finishes_once(
    isolated: Settings,
) -> None:
    client = TrainingClient(isolated)
    first = worker_subprocess(isolated, queues="train")
    try:
        run = _admin_run(client, max_steps=60)
        deadline = time.monotonic() + 120
        while client.status(run.id).step < 12:  # past the checkpoints at steps 5 and 10
            assert time.monotonic() < deadline and first.poll() is None, client.status(run.id)
            time.sleep(0.05)
        first.send_signal(signal.SIGKILL)  # no warm shutdown, no ack, no lock release
        first.wait(timeout=10)
    finally:
        if first.poll() is None:
            first.kill()
    state = Path(isolated.data_dir) / "runs" / run.id / "checkpoint" / "training_state.json"
    checkpoint_step = json.loads(state.read_text())["meta"]["step"]
    killed_at = client.status(run.id)
    assert killed_at.status == TrainRunStatus.RUNNING and 10 <= checkpoint_step < 60

    second = worker_subprocess(isolated, queues="train")
    try:
        done, seen = _follow(client, run.id, timeout_s=150)
    finally:
        stop_process(second)
    assert done.status == TrainRunStatus.DONE, done.error
    assert done.attempts == 2 and done.resumed_from == checkpoint_step
    resumed = [r for r in seen if r.attempts == 2]
    assert resumed and min(r.step for r in resumed) >= checkpoint_step  # continued, not from 0
    assert done.step == 60
    # The loss log holds each step once: the steps after the checkpoint were redone, not appended twice.
    log = Path(isolated.data_dir) / "runs" / run.id / "losses.jsonl"
    assert [json.loads(line)["step"] for line in log.read_text().splitlines()] == list(range(1, 61))
    registry = ModelRegistry(isolated, client.redis)
    assert [v.version for v in registry.list()] == [done.version]  # finished exactly once
    assert client.redis.get("ib:trainrun:lock") is None


def test_one_run_at_a_time_a_duplicate_delivery_is_harmless_and_cancel_stops_a_run(
    isolated: Settings,
) -> None:
    client = TrainingClient(isolated)
    workers = [worker_subprocess(isolated, queues="train") for _ in range(2)]
    try:
        first = _admin_run(client, max_steps=400)
        deadline = time.monotonic() + 60
        while client.status(first.id).step == 0:
            assert time.monotonic() < deadline, client.status(first.id)
            time.sleep(0.05)
        second = _admin_run(client, max_steps=5)  # submitted while the first one trains
        recheck_seen = waiting_seen = False
        deadline = time.monotonic() + 90
        # The first run trains past the 4 s visibility timeout: Redis hands its message to the idle
        # worker too, which finds the live lease and only schedules a re-check.
        while not (recheck_seen and waiting_seen and client.status(first.id).step >= 20):
            assert time.monotonic() < deadline, (client.status(first.id), client.status(second.id))
            recheck_seen = recheck_seen or bool(client.redis.exists(f"ib:trainrun:{first.id}:recheck"))
            waiting = client.status(second.id)
            waiting_seen = waiting_seen or waiting.note == f"waiting for training run {first.id} to finish"
            assert waiting.step == 0 and waiting.status == TrainRunStatus.QUEUED  # never beside the first
            time.sleep(0.05)
        client.cancel(first.id)
        done, _ = _follow(client, second.id, timeout_s=90)
    finally:
        for proc in workers:
            stop_process(proc)
    cancelled = client.status(first.id)
    assert cancelled.status == TrainRunStatus.CANCELLED and cancelled.attempts == 1  # ran once, not twice
    assert 20 <= cancelled.step < 400 and cancelled.version is None
    assert done.status == TrainRunStatus.DONE and done.version is not None, done.error
    registry = ModelRegistry(isolated, client.redis)
    assert [v.version for v in registry.list()] == [done.version]  # the cancelled run registered nothing
    steps = [
        json.loads(line)["step"]
        for line in (Path(isolated.data_dir) / "runs" / first.id / "losses.jsonl").read_text().splitlines()
    ]
    assert steps == list(range(1, len(steps) + 1))  # one trainer wrote it, each step once


def _cli(settings: Settings, *args: str, timeout_s: float = 180) -> subprocess.CompletedProcess[str]:
    """Run ``imaginebot ARGS`` as a real process with exactly ``settings`` (via the environment)."""
    import os
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith("IMAGINEBOT_")}
    env.update({f"IMAGINEBOT_{k.upper()}": str(v) for k, v in settings.model_dump().items() if v is not None})
    env["COLUMNS"] = "200"  # one table row per line
    return subprocess.run(
        [sys.executable, "-m", "worker.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout_s,
    )


def test_cli_retrain_follows_the_run_and_models_commands_promote_and_roll_back(
    isolated: Settings, tmp_path: Path
) -> None:
    config = tmp_path / "tiny.json"
    config.write_text(json.dumps(TINY))
    trainer = worker_subprocess(isolated, queues="train")
    try:
        args = ["--dataset", "shapes", "--steps", "5", "--config", str(config), "--count", "64", "--force",
                "--from-scratch"]  # fmt: skip
        result = _cli(isolated, "retrain", *args, "--eval-count", "32")
    finally:
        stop_process(trainer)
    assert result.returncode == 0, result.stdout + result.stderr
    registry = ModelRegistry(isolated, redis.Redis.from_url(str(isolated.redis_url)))
    version = registry.promoted()
    assert version is not None and f"{version}: score" in result.stdout
    assert "gate forced" in result.stdout or "gate passed" in result.stdout  # --force: promoted either way

    listed = _cli(isolated, "models", "list")
    assert listed.returncode == 0 and f"promoted: {version}" in listed.stdout
    row = next(line for line in listed.stdout.splitlines() if version in line and "shapes " in line)
    assert "*" in row.split(version)[0] and "0." in row  # marked promoted, with its score
    rolled = _cli(isolated, "models", "rollback")
    assert rolled.returncode == 0 and registry.promoted() is None
    assert _cli(isolated, "models", "rollback").returncode == 1  # nothing promoted any more
    assert _cli(isolated, "models", "promote", version).returncode == 0 and registry.promoted() == version
    bad = _cli(isolated, "models", "promote", "../../etc")
    assert bad.returncode == 1 and "not a model version name" in bad.stdout
    refused = _cli(isolated, "retrain", "--dataset", "cats", "--detach")
    assert refused.returncode == 2 and "Unknown dataset" in refused.stdout


def test_the_registry_and_the_training_client_import_no_torch() -> None:
    import sys

    code = "import sys, core.training_client, core.model_versions; assert 'torch' not in sys.modules"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize(
    ("dataset", "score", "baseline", "force", "gate"),
    [
        ("shapes", 0.4, None, False, "passed"),  # nothing promoted (or no stored score) to beat
        ("shapes", 0.4, 0.4, False, "passed"),  # at least as good
        ("shapes", 0.39, 0.4, False, "failed"),
        ("shapes", 0.39, 0.4, True, "forced"),
        ("emoji", None, 0.4, False, "skipped"),  # no automatic metric: registered, not promoted
        ("emoji", None, None, True, "forced"),
    ],
)
def test_evaluation_gate(
    dataset: str, score: float | None, baseline: float | None, force: bool, gate: str
) -> None:
    from worker import train_gate

    run = TrainRun(
        dataset=dataset,
        epochs=1,
        force=force,
        requested_by="cli:0",
        conversation=Conversation(platform="cli", chat_id="cli"),
    )
    metrics = {} if score is None else {"all": score}
    verdict, note = train_gate.gate(
        run, metrics, "dfgan-shapes-20260101T000000Z" if baseline is not None else None, baseline
    )
    assert verdict == gate and note
    if gate == "skipped":
        assert "not promoted" in note and "models promote" in note


@pytest.mark.parametrize(
    ("model", "dataset", "score", "gate", "end"),
    [
        ("dfgan", "squares", 0.41, "passed", "on the shapes answer key vs 0.400 of V; promoted."),
        ("dfgan", "squares", 0.39, "failed", "on the shapes answer key vs 0.400 of V; not promoted."),
        ("diffusion", "squares", 0.4, "passed", "on the shapes answer key vs 0.400 of V; promoted."),
        ("diffusion", "scenes", 0.3, "failed", "on the scenes answer key vs 0.400 of V; not promoted."),
    ],
)
def test_the_gate_scores_a_community_dataset_on_the_family_answer_key(
    model: str, dataset: str, score: float, gate: str, end: str
) -> None:
    from worker import train_gate

    run = TrainRun(
        dataset=dataset,
        epochs=1,
        model=model,
        requested_by="web:admin",
        conversation=Conversation(platform="web", chat_id="admin"),
    )
    verdict, note = train_gate.gate(run, {"all": score}, "V", 0.4)
    assert verdict == gate and note == f"Score {score:.3f} {end}"
    # A stored score stands only for a run on an answer key, scored on that same key.
    assert train_gate.stored_score_applies(model, "shapes", "squares")
    assert not train_gate.stored_score_applies(model, "squares", "shapes")
    assert not train_gate.stored_score_applies("diffusion", "scenes", "shapes")


def test_a_community_run_scores_the_version_in_use_again_on_its_captions(
    isolated: Settings, tmp_path: Path
) -> None:
    """A run on an answer key compares with the promoted version's stored score; a run on a community
    dataset has that version scored again, now, on the run's own captions (its folder, fetched from
    Redis into this machine's data dir when missing here); with nothing promoted, the default."""
    from worker.train_gate import Baseline, baseline_of

    registry = ModelRegistry(isolated, redis.Redis.from_url(str(isolated.redis_url)))
    source = tmp_path / "checkpoint"
    source.mkdir()
    (source / "config.json").write_text("{}")
    (source / "generator.safetensors").write_bytes(b"weights")
    version = registry.new_version_name("shapes")
    registry.register(version, source, "shapes", {"all": 0.5})

    def run(dataset: str) -> TrainRun:
        return TrainRun(
            dataset=dataset,
            epochs=1,
            requested_by="cli:0",
            conversation=Conversation(platform="cli", chat_id="cli"),
        )

    assert baseline_of(registry, run("squares"), default=source) == Baseline(None, folder=source)
    registry.promote(version)
    assert baseline_of(registry, run("shapes"), default=source) == Baseline(version, 0.5)
    again = baseline_of(registry, run("squares"), default=source)
    assert again.version == version and again.score is None and again.folder is not None
    assert (again.folder / "generator.safetensors").read_bytes() == b"weights"


def test_duplicated_messages_cannot_multiply_the_re_checks(isolated: Settings) -> None:
    from types import SimpleNamespace

    from worker.train_lease import schedule_recheck

    sent: list[list[str]] = []
    app = SimpleNamespace(send_task=lambda name, args, queue, countdown: sent.append(args))
    rt = SimpleNamespace(redis=redis.Redis.from_url(str(isolated.redis_url)))
    token = schedule_recheck(rt, app, "0123456789abcdef", 5.0)  # type: ignore[arg-type]
    assert token is not None and sent == [["0123456789abcdef", token]]
    assert schedule_recheck(rt, app, "0123456789abcdef", 5.0) is None  # a redelivered copy: no second chain
    nxt = schedule_recheck(rt, app, "0123456789abcdef", 5.0, token)  # type: ignore[arg-type]
    assert nxt not in (None, token) and len(sent) == 2  # the pending re-check carries the chain on
    assert schedule_recheck(rt, app, "0123456789abcdef", 5.0, token) is None  # ...once


def test_with_nothing_promoted_the_gate_scores_the_default_checkpoint_on_the_same_captions(
    isolated: Settings,
) -> None:
    from types import SimpleNamespace

    from training.dfgan.checkpoint import load_generator
    from worker.engines.dfgan import resolve_default_checkpoint
    from worker.train_dfgan import score_baseline

    registry = ModelRegistry(isolated, redis.Redis.from_url(str(isolated.redis_url)))
    run = TrainRun(
        dataset="shapes",
        epochs=1,
        eval_count=16,
        requested_by="cli:0",
        conversation=Conversation(platform="cli", chat_id="cli"),
    )
    rt = SimpleNamespace(settings=isolated)
    version, score = score_baseline(rt, registry, run, "cpu")  # type: ignore[arg-type]
    folder = resolve_default_checkpoint(isolated.dfgan_checkpoint)
    if folder is None:  # only the random-init placeholder: nothing to beat
        assert (version, score) == (None, None)
    else:
        assert version == load_generator(folder).version and score is not None and 0.0 <= score <= 1.0


@pytest.mark.parametrize("platform", ["discord", "telegram"])
def test_progress_notes_go_to_the_admins_chat_through_its_sender(
    platform: str, isolated: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    import importlib
    from types import SimpleNamespace

    from core.store import History, ImageStore
    from worker.train_report import tell_admin

    client = redis.Redis.from_url(str(isolated.redis_url))
    rt = SimpleNamespace(
        settings=isolated,
        images=ImageStore(client, isolated.result_ttl_s),
        history=History(client, isolated.result_ttl_s),
    )
    posted: list[tuple[str, str]] = []
    sender = importlib.import_module(f"bots.{platform}.send")
    monkeypatch.setattr(sender, "send_text", lambda conv, text, settings: posted.append((conv.chat_id, text)))
    run = TrainRun(
        dataset="shapes",
        epochs=1,
        requested_by=f"{platform}:42",
        conversation=Conversation(platform=platform, chat_id="777"),
    )
    tell_admin(rt, run, "step 5/10")  # type: ignore[arg-type]
    assert posted == [("777", "step 5/10")]

    def refuse(conv: Conversation, text: str, settings: Settings) -> None:
        raise RuntimeError("no token on this worker")

    monkeypatch.setattr(sender, "send_text", refuse)
    tell_admin(rt, run, "done")  # type: ignore[arg-type]  # logged, not raised


def test_a_run_fine_tunes_the_model_in_use_by_default_and_scores_near_it(isolated: Settings) -> None:
    """The default starting point is the model the workers draw with (here the shipped checkpoint):
    a short fine-tune scores close to it, so the gate decides on real differences; the same run from
    scratch scores far below."""
    client = TrainingClient(isolated)
    trainer = worker_subprocess(isolated, queues="train")
    small = {"batch_size": 8, "checkpoint_every": 5}
    try:
        tuned = client.submit_retrain(
            RetrainRequest(dataset="shapes", epochs=1),
            f"web:{ADMIN}",
            Conversation(platform="web", chat_id=ADMIN),
            6,
            config=small,
            count=64,
            eval_count=32,  # the same captions as _admin_run's
        )
        assert not tuned.from_scratch
        tuned, _ = _follow(client, tuned.id, timeout_s=240)
        scratch, _ = _follow(client, _admin_run(client, max_steps=6).id, timeout_s=240)
    finally:
        stop_process(trainer)
    assert tuned.status == scratch.status == TrainRunStatus.DONE, (tuned.error, scratch.error)
    shipped = json.loads((SHIPPED_DFGAN / "config.json").read_text())["version"]
    assert tuned.baseline_version == shipped and tuned.baseline is not None
    assert tuned.baseline > 0.2  # the shipped model really draws shapes
    assert abs(tuned.metrics["all"] - tuned.baseline) <= 0.1, (tuned.metrics, tuned.baseline)
    assert scratch.metrics["all"] < tuned.baseline - 0.15, (scratch.metrics, tuned.baseline)
    config = json.loads((Path(str(tuned.checkpoint)) / "config.json").read_text())
    assert config["ngf"] == 16 and config["lr_g"] == pytest.approx(0.25e-4)  # the parent's, lr lowered
    assert config["ema_warmup"] is False


def test_from_scratch_is_a_retrain_option_and_anything_else_is_explained(isolated: Settings) -> None:
    from core.commands import parse_retrain

    plan = parse_retrain("/retrain dataset:shapes epochs:1 from:scratch", isolated, "web", ADMIN)
    assert plan.from_scratch
    assert not parse_retrain("/retrain dataset:shapes epochs:1", isolated, "web", ADMIN).from_scratch
    with pytest.raises(InputError) as bad:
        parse_retrain("/retrain dataset:shapes from:../x", isolated, "web", ADMIN)
    assert bad.value.code == "bad_start" and "scratch" in bad.value.message


@pytest.mark.timeout(900)  # two engines load, a short run, two 16-caption evaluations on a shared CPU
def test_diffusion_retrain_fine_tunes_gates_promotes_and_reaches_the_gpu_worker(
    isolated: Settings,
) -> None:
    """`/retrain model:diffusion …` runs the same life as DF-GAN's: a fine-tune of the model in use
    (the shipped one here), scored against it on the same captions, registered, promoted (forced, as
    a short run may score a little lower) and drawn by the running GPU worker without a restart."""
    settings = isolated.model_copy(update={"engines": "dfgan,diffusion"})
    client = TrainingClient(settings)
    queue = QueueClient(settings)
    gpu = worker_subprocess(settings, queues="gpu,delivery")
    trainer = worker_subprocess(settings, queues="train")

    try:
        shipped = _draw(queue, settings, 1, "diffusion").version
        plan = RetrainRequest(dataset="shapes", epochs=1, model="diffusion")
        run = client.submit_retrain(
            plan,
            f"web:{ADMIN}",
            Conversation(platform="web", chat_id=ADMIN),
            4,
            force=True,
            config={"batch_size": 8, "checkpoint_every": 2},
            count=32,
            eval_count=16,
        )
        assert run.model == "diffusion" and not run.from_scratch
        run, seen = _follow(client, run.id, timeout_s=600)
        assert run.status == TrainRunStatus.DONE, run.error
        assert seen and all("loss" in r.losses for r in seen)
        shipped_version = json.loads((SHIPPED_DIFFUSION / "imaginebot.json").read_text())["version"]
        assert run.baseline_version == shipped == shipped_version and run.baseline is not None
        assert run.version is not None and run.version.startswith("diffusion-shapes-")
        assert run.promoted and run.gate in ("passed", "forced")
        assert abs(run.metrics["all"] - run.baseline) <= 0.25, (run.metrics, run.baseline)
        registry = ModelRegistry(settings, client.redis, family="diffusion")
        assert registry.promoted() == run.version
        assert ModelRegistry(settings, client.redis).promoted() is None  # DF-GAN's promotion untouched
        assert _draw(queue, settings, 2, "diffusion").version == run.version  # hot reload, no restart
        assert gpu.poll() is None
        registry.rollback()
        assert _draw(queue, settings, 3, "diffusion").version == shipped
    finally:
        stop_process(trainer)
        stop_process(gpu)
