"""``imaginebot up`` as a supervisor, and every long-running process stopping on SIGTERM: real
processes, killed for real, with a real Redis.

- The :class:`~worker.supervisor.Supervisor` with tiny real children: repeated crashes are given up
  on (and reported where the web chat's health reads it), a worker whose heartbeat stops is
  replaced, further stop requests only shorten the grace.
- ``imaginebot up`` itself: a prompt during the workers' start-up is told so and then drawn; a
  SIGKILLed worker comes back and draws the next prompt; ``imaginebot status`` lists the workers;
  SIGTERM x3 leaves no process of the tree; SIGKILL of ``up`` takes its children with it.
- The Telegram and Discord bots stop on SIGTERM when their API server is gone or silent.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import pytest
import redis
import requests

from bots.stopping import STOP_DEADLINE_S
from core import heartbeats
from core.embedded_redis import EmbeddedRedis, free_port
from tests.helpers.waiting import eventually
from training.shipped import SHIPPED_DFGAN, SHIPPED_DIFFUSION
from worker.supervisor import ChildSpec, Supervisor

ROOT = Path(__file__).resolve().parent.parent
START_S = 240.0  # a worker loads torch and both engines; the machine may be busy


def gone(pids: list[int]) -> bool:
    """Whether none of ``pids`` runs any more (zombies count as gone: they run nothing)."""
    for pid in pids:
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                return False
        except psutil.NoSuchProcess:
            continue
    return True


def stop_fake(fake: Any) -> None:
    """Stop a fake platform server. Its listener closes first; on a busy machine the rest of its
    clean-up may outlast the fake's own 10 s wait, which is no failure of the code under test."""
    with contextlib.suppress(TimeoutError):
        fake.stop()


def answers(url: str) -> bool:
    """Whether ``url`` answers 2xx."""
    try:
        return requests.get(url, timeout=5).ok
    except requests.RequestException:
        return False


# --- the supervisor with tiny children -------------------------------------------------------------


def python_child(code: str) -> list[str]:
    return [sys.executable, "-c", textwrap.dedent(code)]


@pytest.fixture
def client(redis_server: EmbeddedRedis) -> Iterator[redis.Redis]:
    c = redis.Redis.from_url(redis_server.url)
    yield c
    c.close()


def test_a_child_that_keeps_crashing_is_given_up_on_and_reported(client: redis.Redis) -> None:
    said: list[str] = []
    supervisor = Supervisor(
        [ChildSpec("flaky worker", python_child("import sys; sys.exit(3)"))],
        redis_client=client,
        say=said.append,
        backoff_s=0.05,
        max_crashes=3,
        name="test-supervisor-crash",
    ).start()
    try:
        eventually(lambda: (supervisor.check(), supervisor.children[0].gave_up)[1], 60, "giving up")
        assert supervisor.children[0].restarts == 2
        assert sum("exit code 3; restarting" in line for line in said) == 2, said
        assert "crashed 3 times in a row (last: exit code 3); gave up" in said[-1], said
        # The web chat's health (and `imaginebot status`) read the report from Redis.
        problems = heartbeats.health_summary(client, ["dfgan"])["problems"]
        assert any("flaky worker crashed 3 times" in p for p in problems), problems
    finally:
        supervisor.stop()
    assert not any("flaky worker" in p for p in heartbeats.health_summary(client, ["dfgan"])["problems"])


def test_a_worker_whose_heartbeat_stops_is_killed_and_restarted(
    client: redis.Redis, redis_server: EmbeddedRedis
) -> None:
    # Publishes a heartbeat like a worker (2 s expiry), then only sleeps; SIGSTOP freezes it.
    beating = python_child(f"""
        import os, time, redis
        from core.heartbeats import Heartbeat, WorkerBeat, worker_name
        client = redis.Redis.from_url({redis_server.url!r})
        beat = WorkerBeat(name=worker_name(), pid=os.getpid(), queues=["gpu"], state="ready")
        Heartbeat(client, beat, interval_s=0.3, ttl_s=2).start()
        time.sleep(600)
    """)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    said: list[str] = []
    spec = ChildSpec("worker gpu", beating, env, heartbeat=True, queues=["gpu"])
    supervisor = Supervisor(
        [spec], redis_client=client, say=said.append, heartbeat_ttl_s=2.0, name="test-supervisor-beat"
    ).start()
    try:
        first = supervisor.children[0].pid
        assert first is not None
        eventually(lambda: (supervisor.check(), supervisor.children[0].beat_seen_at)[1], 60, "first beat")
        os.kill(first, signal.SIGSTOP)  # hung: alive, but silent
        eventually(
            lambda: (supervisor.check(), supervisor.children[0].pid not in (None, first))[1], 60, "restart"
        )
        assert gone([first])
        assert any("stopped answering (no heartbeat); restarting" in line for line in said), said
        eventually(lambda: (supervisor.check(), supervisor.children[0].beat_seen_at)[1], 60, "new beat")
    finally:
        supervisor.stop()
    assert gone([p for p in (supervisor.children[0].proc.pid,)])  # type: ignore[union-attr]


def test_further_stop_requests_shorten_the_grace_and_every_child_still_stops(tmp_path: Path) -> None:
    # Ignores SIGTERM (a worker deep in a long task), then says so by creating its file.
    stubborn = python_child("""
        import pathlib, signal, sys, time
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        pathlib.Path(sys.argv[1]).touch()
        time.sleep(600)
    """)
    ready = [tmp_path / f"ready-{i}" for i in (1, 2)]
    specs = [
        ChildSpec(f"stubborn {i}", [*stubborn, str(ready[i - 1])], group=i, grace_s=600.0) for i in (1, 2)
    ]
    said: list[str] = []
    supervisor = Supervisor(specs, say=said.append, name="test-supervisor-grace")
    supervisor.start()
    pids = [c.pid for c in supervisor.children]
    eventually(lambda: all(f.exists() for f in ready), 60, "children ignoring SIGTERM")
    supervisor.request_stop()
    stopper = threading.Thread(target=supervisor.stop)
    stopper.start()
    eventually(lambda: supervisor.children[0].stopped, 30, "the stop to begin")
    assert stopper.is_alive()  # SIGTERM is ignored and the grace is 600 s: it waits
    supervisor.request_stop()
    supervisor.request_stop()
    stopper.join(timeout=60)
    assert not stopper.is_alive(), "stop() did not return after a third request"
    assert gone([p for p in pids if p is not None])
    assert any("grace shortened to none" in line for line in said), said
    supervisor.stop()  # idempotent


def test_a_consuming_worker_is_live_with_its_queues_and_engines(
    celery_worker: Any, client: redis.Redis, settings: Any
) -> None:
    def mine() -> heartbeats.WorkerBeat | None:
        return next((w for w in heartbeats.live_workers(client) if w.pid == os.getpid()), None)

    beat = eventually(lambda: (w := mine()) and w.state == "ready" and w, 60, "the worker's heartbeat")
    assert set(beat.queues) == {"gpu", "delivery"}
    assert list(beat.engines) == settings.enabled_engines
    assert heartbeats.worker_notice(client, settings.enabled_engines) is None
    # A job for an engine nobody serves is told so.
    notice = heartbeats.worker_notice(client, ["hf-api"])
    assert notice == ("No worker is serving hf-api right now. Your picture waits in the queue until one is.")


# --- the real `imaginebot up` ----------------------------------------------------------------------


def up_env(tmp: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("IMAGINEBOT_")}
    env.update(
        IMAGINEBOT_DATA_DIR=str(tmp / "data"),
        IMAGINEBOT_DEVICE="cpu",
        IMAGINEBOT_TORCH_THREADS="1",
        COLUMNS="300",  # rich wraps its lines at 80 columns when not writing to a terminal
    )
    return env


@dataclass
class Up:
    """A running ``imaginebot up`` (output in a file)."""

    proc: subprocess.Popen[bytes]
    base: str
    log: Path
    tmp: Path
    early: dict[str, Any] = field(default_factory=dict)

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def tree(self) -> list[psutil.Process]:
        try:
            return psutil.Process(self.proc.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            return []

    def child(self, marker: str) -> int | None:
        """PID of the child whose command line contains ``marker``."""
        for p in self.tree():
            try:
                if marker in " ".join(p.cmdline()):
                    return p.pid
            except psutil.Error:
                continue
        return None

    def health(self) -> dict[str, Any] | None:
        try:
            r = requests.get(self.base + "/api/health", timeout=5)
            return r.json() if r.ok else None
        except requests.RequestException:
            return None

    def imagine(self, text: str) -> dict[str, Any]:
        cid = f"sup-{time.monotonic_ns()}"
        r = requests.post(self.base + "/api/imagine", json={"conversation_id": cid, "text": text}, timeout=30)
        assert r.status_code == 202, r.text
        return r.json()["job"]

    def delivered(self, job_id: str, timeout_s: float) -> dict[str, Any]:
        def check() -> dict[str, Any] | None:
            job = requests.get(f"{self.base}/api/jobs/{job_id}", timeout=10).json()["job"]
            return job if job["delivered"] else None

        return eventually(check, timeout_s, f"job {job_id} delivered")


def start_up(tmp: Path, **env: str) -> Up:
    port = free_port()
    log = tmp / "up.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "worker.cli", "up", "--port", str(port)],
            env={**up_env(tmp), **env},
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )
    return Up(proc, f"http://127.0.0.1:{port}", log, tmp)


def stop_up(up: Up) -> None:
    """Make sure nothing of ``up`` is left, whatever a test did."""
    leftovers = up.tree()
    if up.proc.poll() is None:
        up.proc.kill()
        up.proc.wait(timeout=30)
    for p in leftovers:
        try:
            p.kill()
        except psutil.Error:
            pass


@pytest.fixture(scope="module")
def up(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Up]:
    """``imaginebot up`` with a Telegram bot (polling a fake Bot API); the first prompt is sent the
    moment the web chat answers."""
    from tests.helpers.fake_telegram import FakeTelegram

    fake = FakeTelegram("123:TEST").start()
    bot_env = {"IMAGINEBOT_TELEGRAM_TOKEN": "123:TEST", "IMAGINEBOT_TELEGRAM_API_BASE": fake.url}
    running = start_up(tmp_path_factory.mktemp("up"), **bot_env)
    try:
        eventually(lambda: running.proc.poll() is None and running.health(), 120, "web chat up")
        running.early = running.imagine("a red circle --steps 2 --seed 1")
        yield running
    finally:
        stop_up(running)
        stop_fake(fake)


def test_a_prompt_while_the_workers_start_is_told_so_then_drawn(up: Up) -> None:
    assert up.early["status"] == "queued", up.early
    assert up.early["notice"] and "No worker is running yet — starting up" in up.early["notice"], up.early
    job = up.delivered(up.early["id"], START_S)
    assert job["status"] == "done", job
    assert requests.get(f"{up.base}/api/jobs/{job['id']}/pair.png", timeout=10).status_code == 200
    # Once a worker is ready, nothing more to say.
    health = eventually(lambda: (h := up.health()) and h["notice"] is None and h, 60, "no notice")
    assert any("gpu" in w["queues"] and w["state"] == "ready" for w in health["workers"]), health


def test_status_shows_redis_queues_and_the_live_workers_engines(up: Up) -> None:
    up.delivered(up.early["id"], START_S)  # a worker is up
    result = subprocess.run(
        [sys.executable, "-m", "worker.cli", "status"],
        env=up_env(up.tmp),  # no IMAGINEBOT_REDIS_URL: found through the note `up` left in the data dir
        capture_output=True,
        text=True,
        timeout=120,
    )
    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    assert "reachable" in out and "gpu 0 waiting" in out and "no job is waiting" in out, out
    assert "gpu" in out and "delivery" in out and "train" in out, out
    dfgan = json.loads((SHIPPED_DFGAN / "config.json").read_text())["version"]
    diffusion = json.loads((SHIPPED_DIFFUSION / "imaginebot.json").read_text())["version"]
    assert f"dfgan {dfgan}" in out and f"diffusion {diffusion}" in out, out  # the shipped models
    assert "worker gpu running" in out, out


def test_a_killed_worker_comes_back_and_draws_the_next_prompt(up: Up) -> None:
    up.delivered(up.early["id"], START_S)
    first = up.child("--queues gpu")
    assert first is not None
    os.kill(first, signal.SIGKILL)
    eventually(lambda: "killed by SIGKILL; restarting" in up.output(), 60, "the crash noticed")
    eventually(lambda: up.child("--queues gpu") not in (None, first), 60, "a new worker")
    job = up.delivered(up.imagine("a blue square --steps 2 --seed 2")["id"], START_S)
    assert job["status"] == "done", job
    assert "restarted worker gpu" in up.output()


def test_three_sigterms_leave_no_process_of_the_tree(up: Up) -> None:
    markers = ("--queues gpu", "--queues delivery", "--queues train", "worker.cli telegram", "redis-server")
    eventually(lambda: all(up.child(m) for m in markers), 60, "every child running")
    pids = [p.pid for p in up.tree()]
    up.proc.send_signal(signal.SIGTERM)
    eventually(lambda: "stopping:" in up.output(), 60, "the stop to begin")
    up.proc.send_signal(signal.SIGTERM)
    eventually(lambda: "grace shortened" in up.output() or up.proc.poll() is not None, 60, "2nd signal")
    if up.proc.poll() is None:
        up.proc.send_signal(signal.SIGTERM)
    assert up.proc.wait(timeout=120) == 0, up.output()
    eventually(lambda: gone(pids), 30, f"every process of the tree gone ({pids})")
    assert "stopped." in up.output()


def test_sigkill_of_up_takes_its_children_with_it(tmp_path: Path) -> None:
    up = start_up(tmp_path)
    try:
        # Once they run our code (not the moment after fork), the parent-death signal is set.
        eventually(
            lambda: up.child("--queues gpu") and up.child("--queues train") and up.child("redis-server"),
            120,
            "workers and Redis started",
        )
        pids = [p.pid for p in up.tree()]
        up.proc.kill()
        up.proc.wait(timeout=30)
        eventually(lambda: gone(pids), 60, f"the children of a SIGKILLed `up` gone ({pids})")
    finally:
        stop_up(up)


# --- the bots stop on SIGTERM without their API server -------------------------------------------


class SilentServer:
    """Accepts connections and never answers (a hung API server or proxy)."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.accepted: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted.append(conn)

    def close(self) -> None:
        for conn in self.accepted:
            conn.close()
        self.sock.close()


def start_bot(platform: str, api_base: str, redis_url: str, tmp: Path) -> subprocess.Popen[bytes]:
    env = up_env(tmp)
    env.update(IMAGINEBOT_REDIS_URL=redis_url)
    if platform == "telegram":
        env.update(IMAGINEBOT_TELEGRAM_TOKEN="123:TEST", IMAGINEBOT_TELEGRAM_API_BASE=api_base)
    else:
        env.update(IMAGINEBOT_DISCORD_TOKEN="bot-token", IMAGINEBOT_DISCORD_API_BASE=api_base)
    return subprocess.Popen([sys.executable, "-m", "worker.cli", platform], env=env, cwd=ROOT)


@pytest.mark.parametrize("platform", ["telegram", "discord"])
@pytest.mark.parametrize("server", ["gone", "silent"])
def test_bot_stops_on_sigterm_without_its_api_server(
    platform: str, server: str, redis_server: EmbeddedRedis, tmp_path: Path
) -> None:
    from tests.helpers.fake_discord import FakeDiscord
    from tests.helpers.fake_telegram import FakeTelegram

    silent = SilentServer()
    fake_tg = FakeTelegram("123:TEST").start() if platform == "telegram" else None
    fake_dc = FakeDiscord().start() if platform == "discord" else None
    if server == "silent":
        base = f"http://127.0.0.1:{silent.port}" + ("/api/v10" if platform == "discord" else "")
    else:
        base = fake_tg.url if fake_tg is not None else fake_dc.api_base  # type: ignore[union-attr]
    proc = start_bot(platform, base, redis_server.url, tmp_path)
    try:
        if server == "silent":
            eventually(lambda: silent.accepted, 120, "the bot calling its API")
        elif fake_tg is not None:
            fake_tg.wait_for(lambda c: c.method == "deleteWebhook", timeout_s=120)  # polling starts
            fake_tg, running = None, fake_tg
            stop_fake(running)  # the Bot API server is gone
        else:
            assert fake_dc is not None and fake_dc.identified.wait(120), "the bot did not reach the gateway"
            fake_dc, running = None, fake_dc
            stop_fake(running)  # the API and the gateway are gone
        assert proc.poll() is None, "the bot exited before it was asked to"
        proc.send_signal(signal.SIGTERM)
        # Bounded: the graceful part gets STOP_DEADLINE_S, then the process exits regardless.
        proc.wait(timeout=STOP_DEADLINE_S + 30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
        silent.close()
        for fake in (fake_tg, fake_dc):  # those still serving
            if fake is not None:
                stop_fake(fake)


# --- the worker and the web chat stop on SIGTERM without Redis ------------------------------------


@pytest.mark.parametrize("command", ["worker", "web"])
def test_worker_and_web_stop_on_sigterm_with_redis_gone(command: str, tmp_path: Path) -> None:
    own_redis = EmbeddedRedis(tmp_path / "redis", persist=False).start()
    env = up_env(tmp_path)
    env.update(IMAGINEBOT_REDIS_URL=own_redis.url)
    port = free_port()
    args = ["worker", "--queues", "delivery"] if command == "worker" else ["web", "--port", str(port)]
    proc = subprocess.Popen([sys.executable, "-m", "worker.cli", *args], env=env, cwd=ROOT)
    try:
        client = redis.Redis.from_url(own_redis.url)
        if command == "worker":
            eventually(
                lambda: any(w.state == "ready" for w in heartbeats.live_workers(client)), 120, "worker ready"
            )
        else:
            eventually(lambda: answers(f"http://127.0.0.1:{port}/api/health"), 120, "web chat up")
        client.close()
        own_redis.stop()  # Redis is gone from here on
        assert proc.poll() is None, "it exited before it was asked to"
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)  # bounded (Celery gives up reconnecting; the web chat just stops)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
        own_redis.stop()


def test_status_says_when_redis_does_not_answer_without_showing_its_password(tmp_path: Path) -> None:
    env = up_env(tmp_path)
    env.update(IMAGINEBOT_REDIS_URL=f"redis://:s3cret-pass@127.0.0.1:{free_port()}/0")
    result = subprocess.run(
        [sys.executable, "-m", "worker.cli", "status"], env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert "does not answer" in result.stdout, result.stdout
    assert "s3cret" not in result.stdout + result.stderr


# --- what the web page shows --------------------------------------------------------------------


@pytest.mark.skipif(
    not Path("/usr/bin/chromium").exists() and not os.environ.get("CI"),
    reason="needs Debian's Chromium at /usr/bin/chromium (apt install chromium)",
)
def test_the_page_says_no_worker_serves_the_job_and_which_process_up_gave_up_on(tmp_path: Path) -> None:
    """No worker at all on a private Redis, and a report of a child given up on: the queued job's
    bubble and the health badge say so."""
    playwright_sync = pytest.importorskip("playwright.sync_api")
    from bots.web.server import WebServer
    from tests.helpers.browser import CHROMIUM, CHROMIUM_ARGS
    from tests.helpers.settings import make_settings

    with EmbeddedRedis(tmp_path / "redis", persist=False) as own_redis:
        client = redis.Redis.from_url(own_redis.url)
        gave_up = heartbeats.ChildState(
            name="worker gpu,delivery",
            pid=None,
            state="gave up",
            message="worker gpu,delivery crashed 5 times",
        )
        heartbeats.publish_supervisor(client, heartbeats.SupervisorReport(name="test-up", children=[gave_up]))
        server = WebServer(make_settings(own_redis.url, tmp_path / "data"), host="127.0.0.1", port=0).start()
        try:
            with playwright_sync.sync_playwright() as p:
                browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
                page = browser.new_page()
                page.goto(server.url + "/")
                health = page.locator("#health")
                playwright_sync.expect(health).to_contain_text("a process is down", timeout=30_000)
                assert "crashed 5 times" in (health.get_attribute("title") or "")
                page.locator("#prompt").fill("a red circle")
                page.click("#send")
                status = page.locator(".job[data-job-id] .status").first
                playwright_sync.expect(status).to_contain_text(
                    "No worker is serving dfgan or diffusion right now", timeout=30_000
                )
                browser.close()
        finally:
            server.stop()
            client.close()


@pytest.mark.parametrize("platform", ["telegram", "discord"])
def test_a_bot_tells_a_prompt_that_no_worker_serves_its_engines(platform: str, tmp_path: Path) -> None:
    """The real bot process, a private Redis with no worker at all: the queued answer says so."""
    from tests.helpers.fake_discord import APP_ID, FakeDiscord, snowflake
    from tests.helpers.fake_telegram import FakeTelegram, user_message

    notice = "No worker is serving dfgan or diffusion right now"
    with EmbeddedRedis(tmp_path / "redis", persist=False) as own_redis:
        fake_tg = FakeTelegram("123:TEST").start() if platform == "telegram" else None
        fake_dc = FakeDiscord().start() if platform == "discord" else None
        base = fake_tg.url if fake_tg is not None else fake_dc.api_base  # type: ignore[union-attr]
        proc = start_bot(platform, base, own_redis.url, tmp_path)
        try:
            if fake_tg is not None:
                fake_tg.wait_for(lambda c: c.method == "deleteWebhook", timeout_s=120)
                fake_tg.push_update(user_message(1001, 1001, "a red circle", message_id=11))
                fake_tg.wait_for(lambda c: c.method == "editMessageText" and notice in c.params["text"], 60)
            else:
                assert fake_dc is not None and fake_dc.identified.wait(120), (
                    "the bot did not reach the gateway"
                )
                interaction = fake_dc.slash_command(
                    "imagine", {"prompt": "a red circle"}, "4242", snowflake()
                )
                original = f"/webhooks/{APP_ID}/{interaction['token']}/messages/@original"
                fake_dc.wait_for(
                    lambda: any(notice in c.json["content"] for c in fake_dc.calls_to("PATCH", original)),
                    timeout_s=60,
                    what="the queued answer with the notice",
                )
        finally:
            proc.kill()
            proc.wait(timeout=30)
            for fake in (fake_tg, fake_dc):
                if fake is not None:
                    stop_fake(fake)
