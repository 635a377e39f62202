"""The web API answers malformed input with a 400 and a specific code, never a 500; Redis down is a
JSON 503; /retrain beyond localhost resists password guessing and says the same to every refusal."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import requests
from flask.testing import FlaskClient

from bots.web.app import ADMIN_PASSWORD_TRIES, create_app
from core.embedded_redis import free_port
from core.settings import Settings
from tests.helpers.settings import make_settings
from tests.helpers.web_api import beyond_localhost

CID = "input-test-conversation"
ADMIN_CID = "input-test-admin-conv"


@pytest.fixture
def web(settings: Settings, clean_redis: redis.Redis) -> Iterator[FlaskClient]:
    app_settings = settings.model_copy(update={"rate_limit_jobs": 1, "engines": "dfgan"})
    yield create_app(app_settings).test_client()


@pytest.mark.parametrize("body", ["[1, 2]", '"abc"', "5", "null", "{not json"])
def test_a_body_that_is_not_a_json_object_is_a_400_with_its_own_code(web: FlaskClient, body: str) -> None:
    for path in ("/api/imagine", "/api/jobs/0123456789abcdef/cancel"):
        resp = web.post(path, data=body, content_type="application/json")
        assert resp.status_code == 400, (path, resp.status_code)
        assert resp.get_json()["code"] == "bad_json"
        assert "JSON object" in resp.get_json()["error"]


def test_text_that_is_null_missing_or_not_a_string_is_refused_not_drawn(web: FlaskClient) -> None:
    for payload, code in (
        ({"conversation_id": CID, "text": None}, "missing_text"),
        ({"conversation_id": CID}, "missing_text"),
        ({"conversation_id": CID, "text": 5}, "bad_text"),
        ({"conversation_id": CID, "text": ["a", "cat"]}, "bad_text"),
    ):
        resp = web.post("/api/imagine", json=payload)
        assert (resp.status_code, resp.get_json()["code"]) == (400, code), payload
    assert web.get(f"/api/conversations/{CID}").get_json()["messages"] == []  # nothing queued or kept


def test_a_lone_surrogate_is_refused_before_it_spends_a_rate_limit_slot(web: FlaskClient) -> None:
    body = '{"conversation_id": "' + CID + '", "text": "a red \\ud800 circle"}'
    resp = web.post("/api/imagine", data=body, content_type="application/json")
    assert (resp.status_code, resp.get_json()["code"]) == (400, "bad_text")
    # The limit is one job per window: the refused prompt did not use it up.
    ok = web.post("/api/imagine", json={"conversation_id": CID, "text": "a red circle --steps 1"})
    assert ok.status_code == 202, ok.get_json()
    job_id = ok.get_json()["job"]["id"]
    again = web.post("/api/imagine", json={"conversation_id": CID, "text": "a blue square"})
    assert again.status_code == 429  # and the limit does hold
    web.post(f"/api/jobs/{job_id}/cancel", json={"conversation_id": CID})


def test_ids_with_a_trailing_newline_are_not_ids(web: FlaskClient) -> None:
    from core.ids import is_conversation_id, is_job_id, is_run_id

    assert is_job_id("0123456789abcdef") and not is_job_id("0123456789abcdef\n")
    assert is_run_id("0123456789abcdef") and not is_run_id("0123456789abcdef\n")
    assert is_conversation_id(CID) and not is_conversation_id(CID + "\n")
    assert web.get("/api/jobs/0123456789abcdef%0A").status_code == 404
    assert web.get(f"/api/conversations/{CID}%0A").status_code == 400
    resp = web.post("/api/imagine", json={"conversation_id": CID + "\n", "text": "a cat"})
    assert resp.get_json()["code"] == "bad_conversation"


def test_while_redis_is_down_the_api_answers_json_503_with_retry_after(tmp_path: Path) -> None:
    dead = make_settings(f"redis://127.0.0.1:{free_port()}/0", tmp_path)
    web = create_app(dead).test_client()
    for resp in (
        web.post("/api/imagine", json={"conversation_id": CID, "text": "a red circle"}),
        web.get("/api/health"),
        web.get("/api/jobs/0123456789abcdef"),
    ):
        assert resp.status_code == 503
        assert resp.get_json() == {
            "error": "The queue is unavailable right now. Please try again in a minute.",
            "code": "queue_unavailable",
        }
        assert int(resp.headers["Retry-After"]) > 0


def _retrain(web: FlaskClient, cid: str, password: str | None, ip: str = "10.1.2.3") -> tuple[int, dict]:
    payload: dict[str, object] = {"conversation_id": cid, "text": "/retrain dataset:shapes epochs:1"}
    if password is not None:
        payload["admin_password"] = password
    resp = web.post("/api/imagine", json=payload, environ_base={"REMOTE_ADDR": ip})
    return resp.status_code, resp.get_json()


def test_beyond_localhost_retrain_refusals_look_alike_and_guessing_is_slowed(
    settings: Settings, clean_redis: redis.Redis
) -> None:
    web = beyond_localhost(settings, ADMIN_CID)
    wrong_password = _retrain(web, ADMIN_CID, "wrong")
    not_admin = _retrain(web, CID, "correct horse", ip="10.9.9.9")
    assert wrong_password == not_admin  # a guesser learns nothing from the answer
    assert wrong_password[0] == 403 and wrong_password[1]["code"] == "bad_admin_password"
    for _ in range(ADMIN_PASSWORD_TRIES - 1):
        assert _retrain(web, ADMIN_CID, "still wrong")[0] == 403
    # Out of tries: even the right password waits, and says for how long.
    status, body = _retrain(web, ADMIN_CID, "correct horse")
    assert (status, body["code"]) == (429, "too_many_attempts") and body["retry_after"] > 0
    # Another client is not held up by this one's guesses.
    status, body = _retrain(web, ADMIN_CID, "correct horse", ip="10.4.4.4")
    assert status == 202, body
    cancel = {"conversation_id": ADMIN_CID, "text": "/retrain cancel", "admin_password": "correct horse"}
    web.post("/api/imagine", json=cancel, environ_base={"REMOTE_ADDR": "10.4.4.4"})


def test_retrain_locality_follows_the_address_actually_bound(
    settings: Settings, clean_redis: redis.Redis
) -> None:
    """`--host 0.0.0.0` with IMAGINEBOT_WEB_HOST left at 127.0.0.1 must not skip the password check."""
    from bots.web.server import WebServer

    local_settings = settings.model_copy(
        update={"admin_ids": f"web:{ADMIN_CID}", "web_admin_password": None, "web_access_password": "door"}
    )
    assert local_settings.web_is_local
    server = WebServer(local_settings, host="0.0.0.0", port=0).start()
    try:
        port = server.url.rsplit(":", 1)[1]
        browser = requests.Session()
        browser.post(f"http://127.0.0.1:{port}/login", data={"password": "door"}, timeout=10)
        resp = browser.post(
            f"http://127.0.0.1:{port}/api/imagine",
            json={"conversation_id": ADMIN_CID, "text": "/retrain dataset:shapes epochs:1"},
            timeout=10,
        )
    finally:
        server.stop()
    assert (resp.status_code, resp.json()["code"]) == (403, "admin_password_unset"), resp.text
    assert not list(clean_redis.scan_iter("ib:trainrun:*"))
