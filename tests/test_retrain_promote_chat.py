"""Promote and roll back trained versions from chat, admins only, on every front-end:
``/model list|promote VERSION|rollback [model:diffusion]`` in the web chat box (beyond localhost with
the admin password) and on Telegram, Discord's ``/model action:… version:… model:…``.

Real Redis (database 9 of the session server, emptied), the real web app, and the real
python-telegram-bot and discord.py clients against the fake platform servers. The versions are
registered in the real registry (two small checkpoint folders: the registry copies bytes and checks
names; no weights are loaded here).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from bots.discord.bot import ImagineBot
from core.conversation import ModelPromote, ModelRollback, ModelVersions, ShowModel
from core.embedded_redis import EmbeddedRedis
from core.errors import InputError
from core.model_versions import ModelRegistry
from core.settings import Settings
from tests.helpers.bot_threads import TelegramBotThread, discord_bot_on_fake
from tests.helpers.databases import emptied_database
from tests.helpers.fake_discord import APP_ID, FakeDiscord, snowflake
from tests.helpers.fake_telegram import FakeTelegram, user_message
from tests.helpers.settings import make_settings
from tests.helpers.web_api import ADMIN_PASSWORD, beyond_localhost

WEB_ADMIN = "model-admin-1"
TELEGRAM_ADMIN = 6006
DISCORD_ADMIN = "434343"
TOKEN = "456:TEST"
NOT_ADMIN = "Only admins can see and change the model."


@pytest.fixture(scope="module")
def settings(redis_server: EmbeddedRedis, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return make_settings(
        emptied_database(redis_server, 9),
        tmp_path_factory.mktemp("model-chat"),
        engines="dfgan",
        admin_ids=f"web:{WEB_ADMIN},telegram:{TELEGRAM_ADMIN},discord:{DISCORD_ADMIN}",
    )


def _registered(settings: Settings, family: str, dataset: str, when: float, score: float) -> str:
    """A version of ``family`` registered from a small checkpoint folder; its name."""
    registry = ModelRegistry(settings, redis.Redis.from_url(str(settings.redis_url)), family=family)
    source = Path(settings.data_dir) / "sources" / f"{family}-{when}"
    source.mkdir(parents=True)
    label = "config.json" if family == "dfgan" else "imaginebot.json"
    (source / label).write_text(json.dumps({"seed": int(when)}))
    weights = "generator.safetensors" if family == "dfgan" else "unet/weights.safetensors"
    (source / weights).parent.mkdir(parents=True, exist_ok=True)
    (source / weights).write_bytes(bytes([int(when) % 256]) * 64)
    version = registry.new_version_name(dataset, when=when)
    registry.register(version, source, dataset, {"all": score})
    return version


@pytest.fixture
def versions(settings: Settings) -> Iterator[tuple[str, str, str]]:
    """Two DF-GAN versions (shapes, then a community dataset) and one diffusion version, nothing
    promoted; the registry is emptied after the test."""
    client = redis.Redis.from_url(str(settings.redis_url))
    made = (
        _registered(settings, "dfgan", "shapes", 1_700_000_000, 0.4),
        _registered(settings, "dfgan", "squares", 1_700_000_100, 0.41),
        _registered(settings, "diffusion", "squares", 1_700_000_200, 0.3),
    )
    yield made
    client.flushdb()
    import shutil

    shutil.rmtree(Path(settings.data_dir) / "sources", ignore_errors=True)
    shutil.rmtree(Path(settings.data_dir) / "models", ignore_errors=True)


def _promoted(settings: Settings, family: str = "dfgan") -> str | None:
    return ModelRegistry(settings, redis.Redis.from_url(str(settings.redis_url)), family=family).promoted()


def test_model_text_is_read_the_same_everywhere() -> None:
    assert ShowModel.from_text("/model") == ShowModel() == ShowModel.from_text("")
    assert ShowModel.from_text("/model list") == ModelVersions("dfgan")
    assert ShowModel.from_text("list model:Diffusion") == ModelVersions("diffusion")
    assert ShowModel.from_text("/model promote dfgan-x-1") == ModelPromote("dfgan-x-1")
    assert ShowModel.from_text("/model rollback diffusion") == ModelRollback("diffusion")
    for text, code in [
        ("/model promote", "bad_model_command"),
        ("/model promote a b", "bad_model_command"),
        ("/model sideways", "bad_model_command"),
        ("/model rollback model:cats", "unknown_model"),
    ]:
        with pytest.raises(InputError) as bad:
            ShowModel.from_text(text)
        assert bad.value.code == code, text


# --- web -------------------------------------------------------------------------------------------
def test_web_admin_lists_promotes_and_rolls_back(settings: Settings, versions: tuple[str, str, str]) -> None:
    from bots.web.app import create_app

    shapes, squares, diffusion = versions
    web = create_app(settings).test_client()

    def say(cid: str, text: str) -> tuple[int, dict]:
        resp = web.post("/api/imagine", json={"conversation_id": cid, "text": text})
        return resp.status_code, resp.get_json()

    assert say("someone-else", f"/model promote {squares}") == (
        403,
        {"error": NOT_ADMIN, "code": "not_admin"},
    )
    assert _promoted(settings) is None
    status, body = say(WEB_ADMIN, "/model list")
    assert status == 200
    assert body["message"].splitlines() == [
        "DF-GAN versions (newest last):",
        f"- {shapes} (trained on shapes, score 0.400)",
        f"- {squares} (trained on squares, score 0.410)",
        "In use: the configured default. /model promote VERSION or /model rollback to change it.",
    ]
    status, body = say(WEB_ADMIN, f"/model promote {squares}")
    assert status == 200 and _promoted(settings) == squares
    assert body["message"].startswith(f"Promoted {squares}: new DF-GAN pictures are drawn with it")
    assert f"* {squares} (trained on squares" in say(WEB_ADMIN, "/model list")[1]["message"]
    status, body = say(WEB_ADMIN, f"/model promote {diffusion}")
    assert status == 200 and _promoted(settings, "diffusion") == diffusion and _promoted(settings) == squares
    assert body["message"].endswith("Undo with /model rollback model:diffusion.")
    status, body = say(WEB_ADMIN, "/model rollback")
    assert status == 200 and _promoted(settings) is None
    assert body["message"].startswith(
        "Rolled back DF-GAN: new pictures are drawn with the configured default"
    )
    status, body = say(WEB_ADMIN, "/model rollback")
    assert (status, body["code"]) == (400, "nothing_to_roll_back")
    assert body["error"] == "No DF-GAN version is promoted; there is nothing to roll back."
    status, body = say(WEB_ADMIN, "/model promote ../../etc/passwd")
    assert (status, body["code"]) == (400, "model_version") and "not a model version name" in body["error"]
    status, body = say(WEB_ADMIN, "/model promote dfgan-cats-20200101T000000Z")
    assert body["error"] == "Unknown DF-GAN version 'dfgan-cats-20200101T000000Z'. See /model list."
    assert say(WEB_ADMIN, "/model")[1]["message"].startswith("Engines: dfgan")  # unchanged
    assert say(WEB_ADMIN, "/model list model:diffusion")[1]["message"].startswith("diffusion versions")
    texts = [m["text"] for m in web.get(f"/api/conversations/{WEB_ADMIN}").get_json()["messages"]]
    assert f"/model promote {squares}" in texts and any(t.startswith("Rolled back DF-GAN") for t in texts)


def test_beyond_localhost_web_model_needs_the_admin_password(
    settings: Settings, versions: tuple[str, str, str]
) -> None:
    web = beyond_localhost(settings, WEB_ADMIN)
    squares = versions[1]
    for extra in ({}, {"admin_password": "wrong"}):
        resp = web.post(
            "/api/imagine", json={"conversation_id": WEB_ADMIN, "text": f"/model promote {squares}", **extra}
        )
        body = resp.get_json()
        assert (resp.status_code, body["code"]) == (403, "bad_admin_password")
        assert body["error"].startswith("/model was refused")
    assert _promoted(settings) is None
    resp = web.post(
        "/api/imagine",
        json={
            "conversation_id": WEB_ADMIN,
            "text": f"/model promote {squares}",
            "admin_password": ADMIN_PASSWORD,
        },
    )
    assert resp.status_code == 200 and _promoted(settings) == squares
    # /models (everyone's list of models to choose from) still needs no admin password.
    resp = web.post("/api/imagine", json={"conversation_id": "someone-else-2", "text": "/models"})
    assert resp.status_code == 200 and resp.get_json()["message"].startswith("Models")


# --- Telegram --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def telegram(settings: Settings) -> Iterator[FakeTelegram]:
    """The fake Telegram and the bot polling it (no worker: nothing here is drawn)."""
    from bots.telegram.bot import build_application

    fake = FakeTelegram(TOKEN).start()
    bot_settings = settings.model_copy(update={"telegram_token": TOKEN, "telegram_api_base": fake.url})
    runner = TelegramBotThread(build_application(bot_settings)).start()
    yield fake
    runner.stop()
    fake.stop()


def _telegram_answer(fake: FakeTelegram, chat: int, message_id: int) -> str:
    call = fake.wait_for(
        lambda c: (
            c.method == "sendMessage"
            and c.params.get("chat_id") == chat
            and (c.params.get("reply_parameters") or {}).get("message_id") == message_id
        ),
        timeout_s=20,
    )
    return str(call.params["text"])


def test_telegram_admin_promotes_and_rolls_back(
    telegram: FakeTelegram, settings: Settings, versions: tuple[str, str, str]
) -> None:
    fake, squares = telegram, versions[1]
    fake.push_update(user_message(1007, 1007, f"/model promote {squares}", message_id=301))
    assert _telegram_answer(fake, 1007, 301) == NOT_ADMIN and _promoted(settings) is None
    admin = TELEGRAM_ADMIN
    fake.push_update(user_message(admin, admin, f"/model promote {squares}", message_id=302))
    assert _telegram_answer(fake, admin, 302).startswith(f"Promoted {squares}:")
    assert _promoted(settings) == squares
    fake.push_update(user_message(admin, admin, "/model list", message_id=303))
    assert f"* {squares} (trained on squares, score 0.410)" in _telegram_answer(fake, admin, 303)
    fake.push_update(user_message(admin, admin, "/model rollback", message_id=304))
    assert _telegram_answer(fake, admin, 304).startswith("Rolled back DF-GAN:")
    assert _promoted(settings) is None
    fake.push_update(user_message(admin, admin, "/model upside-down", message_id=305))
    assert _telegram_answer(fake, admin, 305).startswith("Use /model (what runs), /model list")


# --- Discord ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def discord(settings: Settings) -> Iterator[tuple[FakeDiscord, ImagineBot]]:
    with discord_bot_on_fake(settings) as (fake, client):
        yield fake, client


def _discord_answer(fake: FakeDiscord, interaction: dict[str, Any]) -> str:
    """The text of the bot's answer to ``interaction``."""
    body = fake.answer_to(interaction).json or {}
    return str(body.get("data", body).get("content", ""))


def test_discord_model_command_lists_promotes_and_rolls_back(
    discord: tuple[FakeDiscord, ImagineBot], settings: Settings, versions: tuple[str, str, str]
) -> None:
    fake, _ = discord
    [sync] = fake.calls_to("PUT", f"/applications/{APP_ID}/commands")
    published = next(c for c in sync.json if c["name"] == "model")
    assert [o["name"] for o in published["options"]] == ["action", "version", "model"]
    shapes, squares, diffusion = versions

    def model(user: str, **options: str) -> str:
        return _discord_answer(fake, fake.slash_command("model", options, user, snowflake()))

    assert model("777", action="promote", version=squares) == NOT_ADMIN and _promoted(settings) is None
    assert model(DISCORD_ADMIN, action="promote", version=shapes).startswith(f"Promoted {shapes}:")
    assert model(DISCORD_ADMIN, action="promote", version=squares).startswith(f"Promoted {squares}:")
    assert _promoted(settings) == squares
    listed = model(DISCORD_ADMIN, action="list")
    assert f"* {squares}" in listed and f"- {shapes}" in listed
    assert model(DISCORD_ADMIN, action="promote", version=diffusion).startswith(f"Promoted {diffusion}:")
    assert model(DISCORD_ADMIN, action="rollback", model="diffusion").startswith("Rolled back diffusion:")
    assert _promoted(settings, "diffusion") is None
    assert model(DISCORD_ADMIN, action="rollback").startswith(
        f"Rolled back DF-GAN: new pictures are drawn with {shapes}"
    )
    assert _promoted(settings) == shapes
    assert model(DISCORD_ADMIN, action="promote").startswith("Use /model (what runs)")
    assert model(DISCORD_ADMIN).startswith("Engines: dfgan")
