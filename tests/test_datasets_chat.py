"""Community datasets built from chat (issue 19): the store's rules and limits, the ``/dataset``
actions of the conversation service on a real Redis (database 14, emptied), the web chat's
``POST /api/datasets`` (JSON and multipart), and ``/retrain dataset:NAME`` knowing the datasets made.

The Telegram and Discord front-ends are checked against their fake servers in
test_datasets_bots.py; a retrain on a community dataset through a real worker in
test_retrain_community.py.
"""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import pytest
from PIL import Image

from core.commands import check_dataset, read_retrain
from core.conversation import ConversationService, Refused
from core.datasets import MAX_SIDE, DatasetStore, check_dataset_name
from core.datasets_chat import (
    NO_PICTURE_TEXT,
    NOT_ADMIN_DATASET,
    Collecting,
    DatasetAdd,
    DatasetAdded,
    DatasetCollecting,
    DatasetCommand,
    DatasetItemRemoved,
    DatasetList,
    DatasetRemove,
    DatasetShow,
    DatasetShown,
    DatasetsListed,
)
from core.embedded_redis import EmbeddedRedis
from core.errors import InputError
from core.job_client import QueueClient
from core.jobs import Conversation
from core.settings import Settings
from core.uploads import UploadStore
from tests.helpers.databases import emptied_database
from tests.helpers.settings import make_settings

ADMIN = "admin-conversation-1"


def picture(
    colour: tuple[int, int, int] = (200, 40, 40), size: tuple[int, int] = (80, 60), fmt: str = "PNG"
) -> bytes:
    """A small picture of one colour, encoded as ``fmt``."""
    out = io.BytesIO()
    Image.new("RGB", size, colour).save(out, format=fmt)
    return out.getvalue()


@pytest.fixture
def settings(redis_server: EmbeddedRedis, tmp_path: Path) -> Settings:
    url = emptied_database(redis_server, 14)
    return make_settings(url, tmp_path / "data", engines="dfgan", admin_ids=f"web:{ADMIN},telegram:5")


@pytest.fixture
def service(settings: Settings) -> ConversationService:
    return ConversationService(settings, QueueClient(settings))


# --- the store -----------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["", "../etc", "a/b", "My Cats", "x" * 33, "café", ".hidden", "a_b"])
def test_dataset_names_are_never_paths(name: str, tmp_path: Path) -> None:
    with pytest.raises(InputError) as bad:
        DatasetStore(tmp_path).add(name, "a cat", picture())
    assert bad.value.code == "bad_dataset_name"
    assert "1-32 lower-case letters, digits or dashes" in bad.value.message
    assert not (tmp_path / "community").exists() or not any((tmp_path / "community").iterdir())


def test_the_store_keeps_pictures_by_server_ids_with_captions(tmp_path: Path) -> None:
    store = DatasetStore(tmp_path)
    assert check_dataset_name("  My-Cats ") == "my-cats"
    first, count = store.add("My-Cats", "  a  ginger\ncat ", picture(), added_by="web:x")
    second, count2 = store.add("my-cats", "a black cat", picture((10, 10, 10), (3000, 1500), "JPEG"))
    assert (count, count2) == (1, 2) and first.caption == "a ginger cat"
    folder = tmp_path / "community" / "my-cats"
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        [f"{first.id}.png", f"{second.id}.png", "index.jsonl"]
    )
    lines = [json.loads(line) for line in (folder / "index.jsonl").read_text().splitlines()]
    assert [(d["id"], d["caption"]) for d in lines] == [
        (first.id, "a ginger cat"),
        (second.id, "a black cat"),
    ]
    with Image.open(folder / f"{second.id}.png") as stored:  # a JPEG, stored as a PNG, scaled down
        assert (stored.format, max(stored.size)) == ("PNG", MAX_SIDE)
    assert store.names() == ["my-cats"] and [i.id for i in store.items("MY-CATS")] == [first.id, second.id]
    gone, left = store.remove("my-cats", first.id.upper())
    assert (gone.id, left) == (first.id, 1) and not (folder / f"{first.id}.png").exists()
    store.remove("my-cats", second.id)
    assert store.names() == [] and not folder.exists()


@pytest.mark.parametrize(
    ("data", "code"),
    [(b"", "image_empty"), (b"not a picture", "image_unreadable"), (picture(fmt="GIF"), "image_format")],
)
def test_pictures_are_checked_like_uploads(data: bytes, code: str, tmp_path: Path) -> None:
    with pytest.raises(InputError) as bad:
        DatasetStore(tmp_path).add("cats", "a cat", data)
    assert bad.value.code == code
    assert DatasetStore(tmp_path).names() == []


def test_limits_captions_reserved_names_and_unknown_items(tmp_path: Path) -> None:
    store = DatasetStore(tmp_path, reserved=["mine"], max_items=2, max_datasets=1)
    store.add("cats", "a cat", picture())
    store.add("cats", "another cat", picture())
    cases = [
        (lambda: store.add("cats", "a third cat", picture()), "dataset_full", "already holds 2 pictures"),
        (lambda: store.add("dogs", "a dog", picture()), "too_many_datasets", "already 1 datasets"),
        (lambda: store.add("shapes", "a dog", picture()), "dataset_reserved", "'shapes' is a built-in"),
        (lambda: store.add("mine", "a dog", picture()), "dataset_reserved", "'mine' is a built-in"),
        (lambda: store.add("cats", " \n ", picture()), "caption_empty", "Give the picture a caption"),
        (lambda: store.add("cats", "x" * 301, picture()), "caption_too_long", "301 characters"),
        (lambda: store.items("dogs"), "unknown_dataset", "No dataset 'dogs'. Datasets made in chat: cats."),
        (lambda: store.remove("cats", "../../x"), "bad_item_id", "12 hex digits"),
        (lambda: store.remove("cats", "0" * 12), "no_such_item", "has no item 000000000000"),
    ]
    for call, code, words in cases:
        with pytest.raises(InputError) as bad:
            call()
        assert bad.value.code == code and words in bad.value.message, (code, bad.value.message)
    assert len(store.items("cats")) == 2 and store.names() == ["cats"]


# --- the conversation service --------------------------------------------------------------------
def _caller(service: ConversationService, cid: str = ADMIN):  # noqa: ANN202
    return service.caller(cid, Conversation(platform="web", chat_id=cid))


def test_dataset_actions_through_the_service(service: ConversationService, settings: Settings) -> None:
    admin = _caller(service)
    uploads = UploadStore(service.queue.redis, settings.result_ttl_s)
    key = uploads.put(picture())
    added = service.handle(admin, DatasetCommand("/dataset add Cats a red square", key))
    assert isinstance(added, DatasetAdded) and added.count == 1 and added.name == "cats"
    assert added.text == (
        f"Added {added.item.id} “a red square” to dataset 'cats' (1 picture). "
        "Train on it: /retrain dataset:cats"
    )
    second = service.handle(admin, DatasetAdd("cats", "a blue square", uploads.put(picture((0, 0, 200)))))
    assert isinstance(second, DatasetAdded) and second.count == 2
    listed = service.handle(admin, DatasetList())
    assert isinstance(listed, DatasetsListed) and listed.text == "Datasets made in chat:\n• cats — 2 pictures"
    shown = service.handle(admin, DatasetShow("cats"))
    assert isinstance(shown, DatasetShown)
    assert shown.text == (
        f"Dataset 'cats': 2 pictures.\n• {added.item.id} “a red square”\n• {second.item.id} “a blue square”"
    )
    with Image.open(io.BytesIO(shown.sheet_png)) as sheet:  # two thumbnails side by side: red, then blue
        rgb = sheet.convert("RGB")
        assert sheet.size == (4 + 2 * 100, 4 + 100)
        assert rgb.getpixel((54, 54))[0] > 150 and rgb.getpixel((154, 54))[2] > 150
    removed = service.handle(admin, DatasetRemove("cats", added.item.id))
    assert isinstance(removed, DatasetItemRemoved) and removed.text.endswith("; 1 picture left.")
    assert check_dataset("Cats", settings) == "cats"


def test_dataset_refusals_are_specific(service: ConversationService) -> None:
    admin, someone = _caller(service), _caller(service, "someone-else-1")
    cases = [
        (someone, DatasetCommand("/dataset list"), "not_admin", NOT_ADMIN_DATASET),
        (someone, DatasetCommand("/dataset gibberish ../"), "not_admin", NOT_ADMIN_DATASET),
        (someone, DatasetShow("cats"), "not_admin", NOT_ADMIN_DATASET),
        (admin, DatasetCommand("/dataset"), "dataset_usage", "Usage: /dataset add NAME caption"),
        (admin, DatasetCommand("/dataset show"), "dataset_usage", "Usage: /dataset add NAME caption"),
        (admin, DatasetCommand("/dataset add cats a cat"), "no_picture", NO_PICTURE_TEXT),
        (admin, DatasetAdd("cats", "a cat", "/etc/passwd"), "no_picture", NO_PICTURE_TEXT),
        (admin, DatasetAdd("cats", "a cat", "ib:upload:" + "0" * 32), "image_expired", "has expired"),
        (admin, DatasetAdd("../x", "a cat", None), "bad_dataset_name", "not a valid dataset name"),
        (admin, DatasetAdd("cats", "", None), "caption_empty", "Give the picture a caption"),
        (admin, DatasetShow("dogs"), "unknown_dataset", "No dataset 'dogs'."),
    ]
    for who, action, code, words in cases:
        reply = service.handle(who, action)
        assert isinstance(reply, Refused) and reply.code == code and words in reply.text, (action, reply)
    listed = service.handle(admin, DatasetCommand("/dataset@imagine_bot LIST"))
    assert isinstance(listed, DatasetsListed) and listed.text.startswith("No datasets made in chat yet.")


def test_retrain_knows_the_configured_and_the_made_datasets(settings: Settings) -> None:
    with pytest.raises(InputError) as unknown:
        read_retrain("/retrain dataset:cats", settings)
    assert unknown.value.message == "Unknown dataset 'cats'. Known datasets: shapes, emoji."
    DatasetStore(settings.data_dir).add("cats", "a cat", picture())
    assert read_retrain("/retrain dataset:Cats epochs:1", settings).dataset == "cats"
    with pytest.raises(InputError) as still:
        read_retrain("/retrain dataset:dogs", settings)
    assert still.value.message == "Unknown dataset 'dogs'. Known datasets: shapes, emoji, cats."


def test_builtin_names_match_the_training_registry() -> None:
    from core.datasets import BUILTIN_NAMES
    from training.data import dataset_names

    assert sorted(BUILTIN_NAMES) == dataset_names()


# --- the web chat --------------------------------------------------------------------------------
def test_web_dataset_commands_json_and_multipart(settings: Settings) -> None:
    from bots.web.app import create_app

    web = create_app(settings).test_client()

    def send(text: str, cid: str = ADMIN, image: bytes | None = None) -> tuple[int, dict]:
        if image is None:
            resp = web.post("/api/datasets", json={"conversation_id": cid, "text": text})
        else:
            form = {"conversation_id": cid, "text": text, "image": (io.BytesIO(image), "x.png")}
            resp = web.post("/api/datasets", data=form, content_type="multipart/form-data")
        return resp.status_code, resp.get_json()

    assert send("/dataset list", "someone-else-1") == (403, {"error": NOT_ADMIN_DATASET, "code": "not_admin"})
    status, body = send("/dataset add cats a red square", image=picture(size=(1200, 900)))
    assert status == 201 and body["dataset"] == "cats" and body["count"] == 1, body
    assert body["message"].startswith(f"Added {body['item']['id']} “a red square” to dataset 'cats'")
    status, body = send("/dataset add cats a bad one", image=b"GIF89a not really")
    assert (status, body["code"]) == (400, "image_unreadable")
    status, body = send("/dataset add ../../etc a cat", image=picture())
    assert (status, body["code"]) == (400, "bad_dataset_name")
    status, body = send("/dataset add cats a cat")  # no picture
    assert (status, body["code"], body["error"]) == (400, "no_picture", NO_PICTURE_TEXT)
    status, body = send("/dataset show cats")
    assert status == 200 and body["count"] == 1 and body["items"][0]["caption"] == "a red square"
    png = base64.b64decode(body["sheet"].removeprefix("data:image/png;base64,"))
    assert Image.open(io.BytesIO(png)).size == (104, 104)
    assert send("/dataset list") == (
        200,
        {"message": "Datasets made in chat:\n• cats — 1 picture", "datasets": [{"name": "cats", "count": 1}]},
    )
    item = body["items"][0]["id"]
    status, body = send(f"/dataset remove cats {item}")
    assert status == 200 and body["left"] == 0 and "the dataset is gone" in body["message"]
    assert DatasetStore(settings.data_dir).names() == []


def test_dataset_add_alone_collects_the_callers_next_pictures(service: ConversationService) -> None:
    admin = _caller(service)
    collecting = Collecting(service.queue.redis)
    started = service.handle(admin, DatasetCommand("/dataset add Cats"))
    assert isinstance(started, DatasetCollecting) and started.name == "cats"
    assert started.text == (
        "Send the pictures for dataset 'cats' now, each with its caption "
        "(for 10 minutes; /dataset done to stop)."
    )
    assert collecting.current(admin.user, ADMIN) == "cats" and collecting.current(admin.user, "other") is None
    refused = service.handle(admin, DatasetCommand("/dataset add shapes"))
    assert isinstance(refused, Refused) and refused.code == "dataset_reserved"
    stopped = service.handle(admin, DatasetCommand("/dataset done"))
    assert (
        stopped.text == "Stopped adding pictures to 'cats'." and collecting.current(admin.user, ADMIN) is None
    )
    assert service.handle(admin, DatasetCommand("/dataset done")).text == "You were not adding pictures."
    someone = service.handle(_caller(service, "someone-else-1"), DatasetCommand("/dataset add cats"))
    assert isinstance(someone, Refused) and someone.code == "not_admin"


def test_the_web_chat_box_takes_dataset_commands(settings: Settings) -> None:
    from bots.web.app import create_app

    web = create_app(settings).test_client()
    form = {
        "conversation_id": ADMIN,
        "text": "/dataset add cats a red square",
        "image": (io.BytesIO(picture()), "a.png"),
    }
    resp = web.post("/api/imagine", data=form, content_type="multipart/form-data")
    assert resp.status_code == 201 and resp.get_json()["dataset"] == "cats", resp.get_json()
    resp = web.post("/api/imagine", json={"conversation_id": "someone-else-1", "text": "/dataset list"})
    assert (resp.status_code, resp.get_json()["code"]) == (403, "not_admin")
    resp = web.post("/api/imagine", json={"conversation_id": ADMIN, "text": "/dataset list"})
    assert resp.get_json()["datasets"] == [{"name": "cats", "count": 1}]
    messages = web.get(f"/api/conversations/{ADMIN}").get_json()["messages"]
    assert [(m["role"], m["text"].split("\n")[0]) for m in messages][-2:] == [
        ("user", "/dataset list"),
        ("bot", "Datasets made in chat:"),
    ]
    assert not web.application.extensions["imaginebot"].queue.user_jobs(f"web:{ADMIN}", unfinished_only=False)
