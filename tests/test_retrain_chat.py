"""Retraining from chat, beyond starting a run: ``/retrain cancel`` on the web chat, the end-of-run
pictures (loss curve, old-vs-new grid) in the admin's conversation, and the web admin password.

Discord and Telegram ``/retrain cancel`` are checked against their fake servers in
test_discord_bot.py and test_telegram_bot.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import redis

from core.commands import is_retrain_cancel, parse_retrain_cancel
from core.embedded_redis import EmbeddedRedis
from core.errors import InputError
from core.settings import Settings
from core.train_runs import TrainRun, TrainRunStatus
from core.training_client import TrainingClient
from tests.helpers.databases import emptied_database
from tests.helpers.settings import make_settings

ADMIN = "admin-conversation-1"


@pytest.fixture
def isolated(redis_server: EmbeddedRedis, tmp_path: Path) -> Settings:
    """Settings on database 8 (emptied), a private data dir, a web admin."""
    url = emptied_database(redis_server, 8)
    return make_settings(url, tmp_path / "data", engines="dfgan", admin_ids=f"web:{ADMIN},telegram:5")


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


def _tiny_checkpoint(folder: Path, seed: int) -> Path:
    import torch

    from training.dfgan.checkpoint import build_generator, save_checkpoint
    from training.dfgan.config import DFGANConfig

    config = DFGANConfig(ngf=4, ndf=4)
    torch.manual_seed(seed)
    return Path(save_checkpoint(folder, build_generator(config), config))


def _finished_run(platform: str, parent: str) -> TrainRun:
    """A run of admin 5 on ``platform`` that trained from ``parent``, as it stands when it ends."""
    from core.jobs import Conversation

    chat = ADMIN if platform == "web" else "777"
    return TrainRun(
        dataset="shapes",
        epochs=1,
        requested_by=f"{platform}:5",
        conversation=Conversation(platform=platform, chat_id=chat),
        parent=parent,
        version="dfgan-shapes-20260102T000000Z",
        step=5,
    )


def _assert_web_conversation_shows_pictures(settings: Settings, run: TrainRun, old: str) -> None:
    """The admin's web conversation links both pictures, which are served; other run paths are not."""
    from bots.web.app import create_app

    web = create_app(settings).test_client()
    messages = web.get(f"/api/conversations/{ADMIN}").get_json()["messages"]
    urls = [m["image_url"] for m in messages if "image_url" in m]
    assert urls == [f"/api/runs/{run.id}/loss-curve.png", f"/api/runs/{run.id}/old-vs-new.png"]
    assert f"{old} (old) vs {run.version} (new)" in messages[-1]["text"]
    for url in urls:
        resp = web.get(url)
        assert resp.status_code == 200 and resp.mimetype == "image/png"
    for bad in (
        f"/api/runs/{run.id}/pair.png",
        "/api/runs/../loss-curve.png",
        f"/api/runs/{'0' * 16}/loss-curve.png",
    ):
        assert web.get(bad).status_code == 404


@pytest.mark.parametrize("platform", ["web", "telegram", "discord"])
def test_end_of_run_pictures_reach_the_admins_conversation(
    platform: str, isolated: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import importlib
    import io
    from types import SimpleNamespace

    from PIL import Image

    from core.model_versions import ModelRegistry
    from core.store import History, ImageStore
    from worker.train_report import post_pictures
    from worker.train_run import Trained

    client = redis.Redis.from_url(str(isolated.redis_url))
    registry = ModelRegistry(isolated, client)
    old = registry.new_version_name("shapes", when=0)
    registry.register(old, _tiny_checkpoint(tmp_path / "old", 1), "shapes", {"all": 0.1})
    loss_curve = tmp_path / "loss_curve.png"
    Image.new("RGB", (40, 30), "white").save(loss_curve)
    run = _finished_run(platform, old)
    rt = SimpleNamespace(
        settings=isolated,
        images=ImageStore(client, isolated.result_ttl_s),
        history=History(client, isolated.result_ttl_s),
    )
    posted: list[tuple[str, bytes, str]] = []
    if platform != "web":
        sender = importlib.import_module(f"bots.{platform}.send")
        monkeypatch.setattr(
            sender,
            "send_photo_text",
            lambda conv, png, caption, s: posted.append((conv.chat_id, png, caption)),
        )
    prompts = ["a red circle", "a blue square", "a green triangle"]
    new = _tiny_checkpoint(tmp_path / "new", 2)
    trained = Trained(new, 5, loss_curve, loss_curve, {}, None, None, prompts)
    post_pictures(rt, registry, run, trained, "cpu")  # type: ignore[arg-type]

    stored = {name: rt.images.get(rt.images.key(run.id, name)) for name in ("loss-curve", "old-vs-new")}
    assert stored["loss-curve"] == loss_curve.read_bytes()
    with Image.open(io.BytesIO(stored["old-vs-new"] or b"")) as grid:
        assert grid.height == 2 * 64 * len(prompts)  # an old and a new row per prompt
    if platform == "web":
        _assert_web_conversation_shows_pictures(isolated, run, old)
        return
    assert [(c, p) for c, p, _ in posted] == [("777", stored["loss-curve"]), ("777", stored["old-vs-new"])]
    assert "loss curve" in posted[0][2] and "(old) vs" in posted[1][2]

    def refuse(*args: object) -> None:
        raise RuntimeError("no token on this worker")

    monkeypatch.setattr(sender, "send_photo_text", refuse)
    post_pictures(rt, registry, run, trained, "cpu")  # type: ignore[arg-type]  # logged, not raised


def test_beyond_localhost_web_retrain_needs_the_admin_password(isolated: Settings) -> None:
    from bots.web.app import create_app

    assert isolated.web_is_local
    for host, local in [("localhost", True), ("127.0.0.2", True), ("::1", True), ("0.0.0.0", False),
                        ("192.168.1.5", False), ("chat.example.org", False)]:  # fmt: skip
        assert isolated.model_copy(update={"web_host": host}).web_is_local is local, host

    def say(app_settings: Settings, text: str, **extra: str) -> tuple[int, dict]:
        web = create_app(app_settings).test_client()
        if not app_settings.web_is_local:  # beyond localhost, using the chat at all needs the access password
            assert web.post("/login", data={"password": "door"}).status_code == 303
        resp = web.post("/api/imagine", json={"conversation_id": ADMIN, "text": text, **extra})
        return resp.status_code, resp.get_json()

    open_settings = isolated.model_copy(update={"web_host": "0.0.0.0", "web_access_password": "door"})
    status, body = say(open_settings, "/retrain dataset:shapes epochs:1")
    assert (status, body["code"]) == (
        403,
        "admin_password_unset",
    ) and "IMAGINEBOT_WEB_ADMIN_PASSWORD" in body["error"]
    guarded = open_settings.model_copy(update={"web_admin_password": "correct horse"})
    for extra in ({}, {"admin_password": "wrong"}):
        status, body = say(guarded, "/retrain dataset:shapes epochs:1", **extra)
        assert (status, body["code"]) == (403, "bad_admin_password")
        status, body = say(guarded, "/retrain cancel", **extra)
        assert (status, body["code"]) == (403, "bad_admin_password")
    assert not list(redis.Redis.from_url(str(isolated.redis_url)).scan_iter("ib:trainrun:*"))
    status, body = say(guarded, "/retrain dataset:shapes epochs:1", admin_password="correct horse")
    assert status == 202, body
    status, body = say(guarded, "/retrain cancel", admin_password="correct horse")
    assert status == 200 and body["run"]["status"] == "cancelled"
    # Drawing needs no password; on localhost /retrain needs none either.
    assert say(open_settings, "a red circle --engine dfgan")[0] == 202
    assert say(isolated, "/retrain dataset:shapes epochs:1")[0] == 202


def test_progress_notes_carry_the_loss_curve_so_far(isolated: Settings) -> None:
    """At 25/50/75 % the admin's conversation gets the loss curve so far with the progress note as its
    caption (the web chat shows it as a picture, served like the end-of-run ones)."""
    import io
    import json
    from types import SimpleNamespace

    from PIL import Image

    from bots.web.app import create_app
    from core.jobs import Conversation
    from core.store import History, ImageStore
    from core.train_runs import TrainRun
    from worker.train_report import progress_reporter
    from worker.train_run import run_dir

    client = redis.Redis.from_url(str(isolated.redis_url))
    rt = SimpleNamespace(
        settings=isolated.model_copy(update={"progress_interval_s": 0.0}),
        images=ImageStore(client, isolated.result_ttl_s),
        history=History(client, isolated.result_ttl_s),
    )
    run = TrainRun(
        dataset="shapes",
        epochs=1,
        requested_by="web:5",
        conversation=Conversation(platform="web", chat_id=ADMIN),
    )
    out = run_dir(rt, run.id)  # type: ignore[arg-type]
    out.mkdir(parents=True)
    heartbeat = SimpleNamespace(beat=lambda **fields: None, stop_requested=False)
    progress = progress_reporter(rt, run, heartbeat)  # type: ignore[arg-type]
    total = 8
    for step in range(1, total + 1):
        losses = {"loss_d": 2.0 / step, "loss_g": 1.0 + step / 10, "gp": 0.1}
        with (out / "losses.jsonl").open("a") as log:
            log.write(json.dumps({"step": step, **losses}) + "\n")
        assert progress(step, total, losses) is False

    messages = create_app(isolated).test_client().get(f"/api/conversations/{ADMIN}").get_json()["messages"]
    pictures = [m for m in messages if "image_url" in m]
    assert [m["image_url"] for m in pictures] == [
        f"/api/runs/{run.id}/progress-{p}.png" for p in (25, 50, 75)
    ]
    assert [m["text"].split(",")[0] for m in pictures] == [
        f"Training run {run.id}: step {s}/{total}" for s in (2, 4, 6)
    ]
    png = create_app(isolated).test_client().get(pictures[-1]["image_url"])
    assert png.status_code == 200
    with Image.open(io.BytesIO(png.data)) as curve:
        assert curve.width > 300 and curve.height > 200
