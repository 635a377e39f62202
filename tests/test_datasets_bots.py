"""``/dataset`` on Discord and Telegram, against the fake platform servers (real discord.py and
python-telegram-bot clients, real Redis database 14, emptied): the picture is fetched from the
platform, checked, and stored under the data dir; show posts the contact sheet.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from typing import Any

import pytest
from PIL import Image

from bots.discord.bot import ImagineBot, build_client
from core.datasets import DatasetStore
from core.datasets_chat import NOT_ADMIN_DATASET
from core.embedded_redis import EmbeddedRedis
from core.settings import Settings
from tests.helpers.bot_threads import DiscordBotThread, TelegramBotThread
from tests.helpers.databases import emptied_database
from tests.helpers.fake_discord import APP_ID, Call, FakeDiscord, snowflake
from tests.helpers.fake_platforms import running
from tests.helpers.fake_telegram import Call as TgCall
from tests.helpers.fake_telegram import FakeTelegram, photo_message, user_message
from tests.helpers.settings import make_settings

DISCORD_ADMIN = "424242"


def picture(colour: tuple[int, int, int] = (20, 160, 40), fmt: str = "PNG") -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (80, 60), colour).save(out, format=fmt)
    return out.getvalue()


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeDiscord]:
    with running(FakeDiscord()) as server:
        yield server


@pytest.fixture(scope="module")
def discord_settings(
    redis_server: EmbeddedRedis, fake: FakeDiscord, tmp_path_factory: pytest.TempPathFactory
) -> Settings:
    return make_settings(
        emptied_database(redis_server, 14),
        tmp_path_factory.mktemp("datasets-discord"),
        discord_api_base=fake.api_base,
        discord_token="fake-bot-token",
        admin_ids=f"discord:{DISCORD_ADMIN}",
    )


@pytest.fixture(scope="module")
def bot(fake: FakeDiscord, discord_settings: Settings) -> Iterator[ImagineBot]:
    client = build_client(discord_settings)
    runner = DiscordBotThread(client).start()
    try:
        fake.wait_for(lambda: runner.error or client.is_ready(), timeout_s=30, what="the bot to be ready")
        assert runner.error is None, runner.error
        yield client
    finally:
        runner.stop()


def _subcommand(
    fake: FakeDiscord, sub: str, options: dict[str, Any], user: str, attachment: dict | None = None
) -> dict[str, Any]:
    """Dispatch ``/dataset <sub>`` with ``options`` (``image``: the attachment)."""
    listed = [{"name": k, "type": 3, "value": v} for k, v in options.items()]
    data: dict[str, Any] = {"id": snowflake(), "name": "dataset", "type": 1}
    if attachment is not None:
        listed.append({"name": "image", "type": 11, "value": attachment["id"]})
        data["resolved"] = {"attachments": {attachment["id"]: attachment}}
    data["options"] = [{"type": 1, "name": sub, "options": listed}]
    return fake._interaction(2, data, user, snowflake(), None)


def _answer(fake: FakeDiscord, interaction: dict) -> Call:
    """The interaction's answer: its callback, or the edit of the deferred one."""
    return fake.answer_to(interaction)


def _content(call: Call) -> str:
    body = call.json or {}
    return str(body.get("data", body).get("content", ""))


def test_discord_dataset_group_is_published(fake: FakeDiscord, bot: ImagineBot) -> None:
    [sync] = fake.calls_to("PUT", f"/applications/{APP_ID}/commands")
    group = next(c for c in sync.json if c["name"] == "dataset")
    subs = {o["name"]: [p["name"] for p in o.get("options", [])] for o in group["options"]}
    assert subs == {
        "add": ["name", "image", "caption"],
        "list": [],
        "show": ["name"],
        "remove": ["name", "item"],
    }


def test_discord_admin_builds_a_dataset(
    fake: FakeDiscord, bot: ImagineBot, discord_settings: Settings
) -> None:
    sent = fake.attachment("cat.jpg", picture(fmt="JPEG"))
    added = _answer(
        fake, _subcommand(fake, "add", {"name": "Cats", "caption": "a green cat"}, DISCORD_ADMIN, sent)
    )
    assert _content(added).startswith("Added ") and "to dataset 'cats' (1 picture)" in _content(added)
    assert fake.downloads.count(sent["id"]) == 1
    [item] = DatasetStore(discord_settings.data_dir).items("cats")
    assert item.caption == "a green cat" and item.added_by == f"discord:{DISCORD_ADMIN}"
    stored = discord_settings.data_dir / "community" / "cats" / f"{item.id}.png"
    assert Image.open(stored).format == "PNG"

    shown = _answer(fake, _subcommand(fake, "show", {"name": "cats"}, DISCORD_ADMIN))
    assert _content(shown) == f"Dataset 'cats': 1 picture.\n• {item.id} “a green cat”"
    [sheet] = shown.files.values()
    assert Image.open(io.BytesIO(sheet)).size == (104, 104)
    listed = _answer(fake, _subcommand(fake, "list", {}, DISCORD_ADMIN))
    assert _content(listed) == "Datasets made in chat:\n• cats — 1 picture"

    bad = fake.attachment("notes.png", b"just some text")
    refused = _answer(fake, _subcommand(fake, "add", {"name": "cats", "caption": "x"}, DISCORD_ADMIN, bad))
    assert _content(refused).startswith("That file is not an image I can read.")
    big = fake.attachment("huge.png", picture(), size=11 * 1024 * 1024)
    refused = _answer(fake, _subcommand(fake, "add", {"name": "cats", "caption": "x"}, DISCORD_ADMIN, big))
    assert _content(refused).startswith("The image is 11.0 MB") and big["id"] not in fake.downloads
    someone = fake.attachment("cat.png", picture())
    refused = _answer(fake, _subcommand(fake, "add", {"name": "cats", "caption": "x"}, "777", someone))
    assert _content(refused) == NOT_ADMIN_DATASET and someone["id"] not in fake.downloads

    removed = _answer(fake, _subcommand(fake, "remove", {"name": "cats", "item": item.id}, DISCORD_ADMIN))
    assert "the dataset is gone" in _content(removed)
    assert DatasetStore(discord_settings.data_dir).names() == []


# --- Telegram --------------------------------------------------------------------------------------
TELEGRAM_ADMIN = 5005
TOKEN = "123:TEST"


@pytest.fixture(scope="module")
def telegram(
    redis_server: EmbeddedRedis, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[FakeTelegram, Settings]]:
    """The fake Telegram and the bot polling it (no worker: nothing here is drawn)."""
    from bots.telegram.bot import build_application

    fake = FakeTelegram(TOKEN).start()
    settings = make_settings(
        emptied_database(redis_server, 14),
        tmp_path_factory.mktemp("datasets-telegram"),
        telegram_token=TOKEN,
        telegram_api_base=fake.url,
        admin_ids=f"telegram:{TELEGRAM_ADMIN}",
    )
    runner = TelegramBotThread(build_application(settings)).start()
    yield fake, settings
    runner.stop()
    fake.stop()


def _answered(fake: FakeTelegram, chat: int, message_id: int, method: str = "sendMessage") -> TgCall:
    return fake.wait_for(
        lambda c: (
            c.method == method
            and c.params.get("chat_id") == chat
            and (c.params.get("reply_parameters") or {}).get("message_id") == message_id
        ),
        timeout_s=20,
    )


def _photo(
    fake: FakeTelegram,
    chat: int,
    caption: str | None,
    message_id: int,
    data: bytes | None = None,
    user: int = TELEGRAM_ADMIN,
) -> dict:
    sizes = [fake.photo(data or picture(), 80, 60)]
    return photo_message(chat, user, caption, message_id, sizes)


def test_telegram_admin_builds_a_dataset_three_ways(telegram: tuple[FakeTelegram, Settings]) -> None:
    fake, settings = telegram
    chat = 910_001
    store = DatasetStore(settings.data_dir)

    # 1. A photo captioned with the command.
    fake.push_update(_photo(fake, chat, "/dataset add birds a green bird", 11))
    assert "to dataset 'birds' (1 picture)" in _answered(fake, chat, 11).params["text"]
    # 2. The command as a reply to a photo.
    photo = _photo(fake, chat, None, 12, picture((0, 0, 200)))
    fake.push_update(
        user_message(chat, TELEGRAM_ADMIN, "/dataset add birds a blue bird", 13, reply_to=photo["message"])
    )
    assert "(2 pictures)" in _answered(fake, chat, 13).params["text"]
    # 3. /dataset add NAME, then captioned photos, until /dataset done.
    fake.push_update(user_message(chat, TELEGRAM_ADMIN, "/dataset add birds", 14))
    assert _answered(fake, chat, 14).params["text"].startswith("Send the pictures for dataset 'birds' now")
    fake.push_update(_photo(fake, chat, "a red bird", 15, picture((200, 0, 0))))
    assert "(3 pictures)" in _answered(fake, chat, 15).params["text"]
    fake.push_update(_photo(fake, chat, None, 16))
    assert _answered(fake, chat, 16).params["text"] == "Give the picture a caption: what it shows, in words."
    fake.push_update(user_message(chat, TELEGRAM_ADMIN, "/dataset done", 17))
    assert _answered(fake, chat, 17).params["text"] == "Stopped adding pictures to 'birds'."
    assert [i.caption for i in store.items("birds")] == ["a green bird", "a blue bird", "a red bird"]

    fake.push_update(user_message(chat, TELEGRAM_ADMIN, "/dataset show birds", 18))
    shown = _answered(fake, chat, 18, "sendPhoto")
    assert shown.params["caption"].startswith("Dataset 'birds': 3 pictures.\n• ")
    [sheet] = shown.files.values()
    assert Image.open(io.BytesIO(sheet)).size == (4 + 3 * 100, 104)

    fake.push_update(_photo(fake, chat, "/dataset add birds not a picture", 19, b"just some text"))
    assert _answered(fake, chat, 19).params["text"].startswith("That file is not an image I can read.")
    fake.push_update(_photo(fake, chat, "/dataset add birds a cat", 20, user=777))
    assert _answered(fake, chat, 20).params["text"] == NOT_ADMIN_DATASET
    fake.push_update(user_message(chat, TELEGRAM_ADMIN, "/dataset remove birds 000000000000", 21))
    assert _answered(fake, chat, 21).params["text"] == "Dataset 'birds' has no item 000000000000."
    assert len(store.items("birds")) == 3
