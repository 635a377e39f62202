"""Rate limit, queue-full cap, cancel and exactly-once delivery, through the real API and Redis."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import requests

from bots.web.server import WebServer
from core.embedded_redis import EmbeddedRedis
from tests.helpers.settings import make_settings
from tests.helpers.waiting import queues_drained
from tests.helpers.web_api import imagine, wait_for_job


@pytest.fixture
def idle_web(redis_server: EmbeddedRedis, data_dir: Path) -> Iterator[str]:
    """A web chat on its own Redis database with NO worker: jobs stay queued. Tight limits."""
    url = redis_server.url.rsplit("/", 1)[0] + "/6"
    redis.Redis.from_url(url).flushdb()
    settings = make_settings(url, data_dir, rate_limit_jobs=3, rate_limit_window_s=60, max_queue_depth=5)
    server = WebServer(settings, host="127.0.0.1", port=0).start()
    yield server.url
    server.stop()


def test_rate_limit_answers_with_when_to_retry(idle_web: str, conversation_id: str) -> None:
    for _ in range(3):
        assert imagine(idle_web, conversation_id, "a red circle").status_code == 202
    resp = imagine(idle_web, conversation_id, "a red circle")
    assert resp.status_code == 429
    body = resp.json()
    assert body["code"] == "rate_limited"
    assert "Try again in" in body["error"] and 1 <= body["retry_after"] <= 60
    assert 1 <= int(resp.headers["Retry-After"]) <= 60
    # Another user is not affected.
    assert imagine(idle_web, conversation_id + "-other", "a red circle").status_code == 202


def test_queue_full_is_refused_and_positions_are_reported(idle_web: str) -> None:
    positions = []
    for i in range(5):
        resp = imagine(idle_web, f"user-number-{i}", "a red circle")
        assert resp.status_code == 202
        positions.append(resp.json()["job"]["position"])
    assert positions == [1, 2, 3, 4, 5]
    resp = imagine(idle_web, "user-number-6", "a red circle")
    assert resp.status_code == 503
    assert resp.json()["code"] == "queue_full"
    assert "queue is full" in resp.json()["error"]


def test_cancel_a_queued_job_only_by_its_owner(idle_web: str, conversation_id: str) -> None:
    job = imagine(idle_web, conversation_id, "a red circle").json()["job"]
    other = requests.post(
        f"{idle_web}/api/jobs/{job['id']}/cancel", json={"conversation_id": "someone-else"}, timeout=5
    )
    assert other.status_code == 403 and other.json()["code"] == "not_your_job"
    mine = requests.post(
        f"{idle_web}/api/jobs/{job['id']}/cancel", json={"conversation_id": conversation_id}, timeout=5
    )
    assert mine.status_code == 200 and mine.json()["job"]["status"] == "cancelled"
    again = requests.post(
        f"{idle_web}/api/jobs/{job['id']}/cancel", json={"conversation_id": conversation_id}, timeout=5
    )
    assert again.status_code == 409 and again.json()["code"] == "already_finished"
    # A cancelled job leaves the queue: the next one is first in line.
    nxt = imagine(idle_web, conversation_id, "a blue square").json()["job"]
    assert nxt["position"] == 1


@pytest.mark.usefixtures("clean_redis")
def test_cancel_while_drawing_stops_the_run(web_server: str, conversation_id: str) -> None:
    job = imagine(
        web_server, conversation_id, "a red circle --engine diffusion --steps 100 --size 128"
    ).json()["job"]
    deadline = time.monotonic() + 60
    while requests.get(f"{web_server}/api/jobs/{job['id']}", timeout=5).json()["job"]["progress"] is None:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    cancel = requests.post(
        f"{web_server}/api/jobs/{job['id']}/cancel", json={"conversation_id": conversation_id}, timeout=5
    )
    assert cancel.status_code == 200
    final = wait_for_job(web_server, job["id"], timeout_s=60)
    assert final["status"] == "cancelled" and final["image_url"] is None
    assert final["progress"]["step"] < 100


@pytest.mark.usefixtures("clean_redis")
def test_delivery_happens_once_even_if_the_task_runs_again(
    web_server: str, conversation_id: str, celery_app
) -> None:  # noqa: ANN001
    from worker.deliver import run_deliver
    from worker.runtime import runtime_for

    job = imagine(web_server, conversation_id, "a red circle --engine dfgan").json()["job"]
    wait_for_job(web_server, job["id"])
    rt = runtime_for(celery_app)
    assert run_deliver(rt, job["id"]) == "already-delivered"
    celery_app.send_task("imaginebot.deliver", args=[job["id"]], queue="delivery")
    celery_app.send_task("imaginebot.generate", args=[job["id"]], queue="gpu")
    queues_drained(celery_app, rt.redis)  # both duplicates have run by now
    events = [e for e in rt.history.read("web", conversation_id) if e.get("role") == "bot"]
    assert [e["job_id"] for e in events] == [job["id"]]


def test_settings_are_validated_stored_and_listed_jobs_have_positions(idle_web: str, redis_server) -> None:  # noqa: ANN001
    from core.conversation import ConversationService, FromText, Refused, SettingsShown, UserSettings
    from core.job_client import QueueClient
    from core.jobs import Conversation
    from core.settings import Settings

    url = redis_server.url.rsplit("/", 1)[0] + "/6"
    settings = Settings(_env_file=None, redis_url=url)  # type: ignore[call-arg]
    service = ConversationService(settings, QueueClient(settings))
    caller = service.caller("9", Conversation(platform="telegram", chat_id="9"))
    store = service.prefs

    def change(text: str) -> SettingsShown | Refused:
        reply = service.handle(caller, FromText(UserSettings, text))
        assert isinstance(reply, SettingsShown | Refused)
        return reply

    prefs = change("--engine dfgan --steps 30")
    assert isinstance(prefs, SettingsShown) and prefs.engines == ["dfgan"]
    assert store.get("telegram:9").steps == 30
    refused = change("--steps 1000")
    assert isinstance(refused, Refused) and refused.code == "steps_out_of_range"
    assert store.get("telegram:9").steps == 30  # a bad change loses nothing
    change("reset")
    assert store.get("telegram:9").engines is None

    for _ in range(2):
        imagine(idle_web, "queue-lister-1", "a red circle")
    jobs = QueueClient(settings).user_jobs("web:queue-lister-1")
    assert [position for _, position in jobs] == [1, 2]
