"""Retraining from chat, beyond starting a run: ``/retrain cancel`` on the web chat, the end-of-run
pictures (loss curve, old-vs-new grid) in the admin's conversation, and the web admin password.

Discord and Telegram ``/retrain cancel`` are checked against their fake servers in
test_discord_bot.py and test_telegram_bot.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from core.commands import is_retrain_cancel, parse_retrain_cancel
from core.embedded_redis import EmbeddedRedis
from core.errors import InputError
from core.settings import Settings
from core.training_client import TrainingClient, TrainRunStatus
from tests.conftest import make_settings

ADMIN = "admin-conversation-1"


@pytest.fixture
def isolated(redis_server: EmbeddedRedis, tmp_path: Path) -> Iterator[Settings]:
    """Settings on database 8 (emptied), a private data dir, a web admin."""
    url = redis_server.url.rsplit("/", 1)[0] + "/8"
    client = redis.Redis.from_url(url)
    client.flushdb()
    yield make_settings(url, tmp_path / "data", engines="dfgan", admin_ids=f"web:{ADMIN},telegram:5")
    client.close()


def test_parse_retrain_cancel_checks_admins_and_the_run_id(isolated: Settings) -> None:
    assert is_retrain_cancel("/retrain cancel") and is_retrain_cancel("/retrain  CANCEL 0123456789abcdef")
    assert not is_retrain_cancel("/retrain dataset:shapes") and not is_retrain_cancel("/retrain")
    assert parse_retrain_cancel("/retrain cancel", isolated, "telegram", "5") is None
    assert parse_retrain_cancel("cancel 0123456789ABCDEF", isolated, "telegram", "5") == "0123456789abcdef"
    for text in ("/retrain cancel ../../etc", "/retrain cancel 0123", "/retrain cancel 0123456789abcdef x"):
        with pytest.raises(InputError) as bad:
            parse_retrain_cancel(text, isolated, "telegram", "5")
        assert bad.value.code == "bad_run_id"
    with pytest.raises(InputError) as refused:
        parse_retrain_cancel("/retrain cancel", isolated, "telegram", "6")
    assert refused.value.code == "not_admin"


def test_web_chat_retrain_cancel(isolated: Settings) -> None:
    from bots.web.app import create_app

    web = create_app(isolated).test_client()
    client = TrainingClient(isolated)

    def say(cid: str, text: str) -> tuple[int, dict]:
        resp = web.post("/api/imagine", json={"conversation_id": cid, "text": text})
        return resp.status_code, resp.get_json()

    assert say("someone-else-1", "/retrain cancel") == (
        403,
        {"error": "Only admins can cancel training runs.", "code": "not_admin"},
    )
    status, body = say(ADMIN, "/retrain cancel")
    assert (status, body["code"]) == (404, "no_run")
    older = say(ADMIN, "/retrain dataset:shapes epochs:1")[1]["run"]["id"]
    newer = say(ADMIN, "/retrain dataset:shapes epochs:2")[1]["run"]["id"]
    status, body = say(ADMIN, "/retrain cancel")  # the latest unfinished one
    assert status == 200 and body["run"]["id"] == newer and newer in body["message"]
    assert client.status(newer).status == TrainRunStatus.CANCELLED
    assert client.status(older).status == TrainRunStatus.QUEUED
    status, body = say(ADMIN, f"/retrain cancel {newer}")
    assert (status, body["code"], body["error"]) == (
        409,
        "already_finished",
        "That training run is already cancelled.",
    )
    status, body = say(ADMIN, f"/retrain cancel {'f' * 16}")
    assert (status, body["code"]) == (404, "unknown_run")
    status, body = say(ADMIN, "/retrain cancel ../../etc/passwd")
    assert (status, body["code"]) == (400, "bad_run_id")
    status, body = say(ADMIN, f"/retrain cancel {older}")
    assert status == 200 and client.status(older).status == TrainRunStatus.CANCELLED
    texts = [m["text"] for m in web.get(f"/api/conversations/{ADMIN}").get_json()["messages"]]
    assert any(t.startswith(f"Cancelled training run {older} ") for t in texts)
