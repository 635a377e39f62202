"""``/retrain dataset:NAME`` on a dataset admins built in the web chat, end to end: the pictures go
in through ``POST /api/datasets`` (the real web app), the run is asked for in the chat, and a real
``imaginebot worker`` process on the ``train`` queue fine-tunes DF-GAN on them, then (2 steps) our
diffusion model; the gate scores each on the shapes answer key against the model in use.

Real Redis (database 15 of the session server, emptied), a private data dir shared by the web app
and the worker (the community datasets live there).
"""

from __future__ import annotations

import io
import time
from pathlib import Path

import pytest
from PIL import Image, ImageDraw

from core.commands import RetrainRequest
from core.embedded_redis import EmbeddedRedis
from core.jobs import Conversation
from core.model_versions import ModelRegistry
from core.settings import Settings
from core.train_runs import TrainRun, TrainRunStatus
from core.training_client import TrainingClient
from tests.helpers.databases import emptied_database
from tests.helpers.processes import worker_subprocess
from tests.helpers.settings import make_settings

ADMIN = "admin-conversation-1"
COLOURS = {"red": (215, 40, 40), "blue": (40, 80, 215), "green": (40, 160, 60), "yellow": (230, 205, 40)}


@pytest.fixture
def isolated(redis_server: EmbeddedRedis, tmp_path: Path) -> Settings:
    """Settings on database 15 (emptied), a private data dir, a web admin, dfgan only, and a gate
    that scores 32 captions of the answer key."""
    url = emptied_database(redis_server, 15)
    return make_settings(
        url, tmp_path / "data", engines="dfgan", admin_ids=f"web:{ADMIN}", retrain_eval_count=32
    )


def _square(colour: tuple[int, int, int], left: bool) -> bytes:
    image = Image.new("RGB", (96, 96), (150, 150, 150))
    x = 8 if left else 48
    ImageDraw.Draw(image).rectangle((x, 28, x + 40, 68), fill=colour)
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def _follow(client: TrainingClient, run_id: str, timeout_s: float) -> TrainRun:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        run = client.status(run_id)
        if run.status.finished:
            return run
        time.sleep(0.2)
    raise AssertionError(f"run {run_id} not finished in {timeout_s} s: {client.status(run_id)}")


@pytest.mark.timeout(900)  # two short runs, the diffusion one loading its pipeline on a shared CPU
def test_a_dataset_built_in_the_web_chat_is_retrained_on_by_a_real_worker(isolated: Settings) -> None:
    from bots.web.app import create_app
    from training.data.community import CommunityDataset

    web = create_app(isolated).test_client()
    for name, colour in COLOURS.items():
        for left in (True, False):
            caption = f"a {name} square on the {'left' if left else 'right'}"
            form = {"conversation_id": ADMIN, "text": f"/dataset add squares {caption}"}
            form["image"] = (io.BytesIO(_square(colour, left)), "square.png")  # type: ignore[assignment]
            resp = web.post("/api/datasets", data=form, content_type="multipart/form-data")
            assert resp.status_code == 201, resp.get_json()
    assert resp.get_json()["count"] == 8

    # What the trainer reads: the stored pictures as [-1, 1] tensors with their captions.
    data = CommunityDataset("squares", isolated.data_dir, imsize=32, train=False)
    image, caption = data[0]
    assert len(data) == 8 and tuple(image.shape) == (3, 32, 32) and caption == "a red square on the left"
    assert image.min() >= -1 and image.max() <= 1 and image[0, 16, 10] > 0.5 > image[2, 16, 10]
    assert data.sample_prompts[:2] == ["a red square on the left", "a red square on the right"]

    resp = web.post(
        "/api/imagine", json={"conversation_id": ADMIN, "text": "/retrain dataset:Squares epochs:1"}
    )
    assert resp.status_code == 202, resp.get_json()
    run_id = resp.get_json()["run"]["id"]
    client = TrainingClient(isolated)
    trainer = worker_subprocess(isolated, queues="train")
    try:
        run = _follow(client, run_id, timeout_s=300)
        # Our diffusion model fine-tunes on it too (2 steps; source_size pictures from the same files).
        plan = RetrainRequest(dataset="squares", epochs=1, model="diffusion")
        admin = Conversation(platform="web", chat_id=ADMIN)
        queued = client.submit_retrain(plan, f"web:{ADMIN}", admin, 2, config={"batch_size": 4}, eval_count=8)
        diffusion = _follow(client, queued.id, timeout_s=400)
    finally:
        trainer.terminate()
        trainer.wait(timeout=60)
    assert run.status == TrainRunStatus.DONE, run.error
    assert run.dataset == "squares" and not run.from_scratch and run.step == 1  # 8 pictures, batch 16
    # The gate scored the fine-tune and the shipped model on the same 32 shapes captions: one step at
    # the fine-tuning rate leaves the score near the baseline's, and the verdict follows the scores.
    assert run.baseline is not None and run.baseline_version, run.gate_note
    assert abs(run.metrics["all"] - run.baseline) <= 0.25, (run.metrics, run.baseline)
    assert run.gate == ("passed" if run.metrics["all"] >= run.baseline else "failed")
    expected = f"Score {run.metrics['all']:.3f} on the shapes answer key vs {run.baseline:.3f}"
    assert expected in run.gate_note and str(run.baseline_version) in run.gate_note
    registry = ModelRegistry(isolated, client.redis)
    entry = registry.get(str(run.version))
    assert entry is not None and entry.version.startswith("dfgan-squares-") and entry.run_id == run.id
    assert entry.metrics["all"] == run.metrics["all"]  # the next run's gate compares with it
    assert registry.promoted() == (run.version if run.promoted else None)
    assert run.promoted == (run.gate == "passed")
    assert diffusion.status == TrainRunStatus.DONE, diffusion.error
    assert diffusion.step == 2 and str(diffusion.version).startswith("diffusion-squares-")
    assert diffusion.baseline is not None and "on the shapes answer key vs" in diffusion.gate_note
    promoted = ModelRegistry(isolated, client.redis, family="diffusion").promoted()
    assert promoted == (diffusion.version if diffusion.promoted else None)
    texts = [m.get("text", "") for m in web.get(f"/api/conversations/{ADMIN}").get_json()["messages"]]
    assert any(run.id in t and "squares" in t for t in texts)
    assert any(t.startswith(f"Training run {run.id} finished") and expected in t for t in texts)

    # Whatever the gate said, the admin decides from the same chat: promote it, then roll back.
    def say(text: str) -> dict:
        resp = web.post("/api/imagine", json={"conversation_id": ADMIN, "text": text})
        assert resp.status_code == 200, resp.get_json()
        return resp.get_json()

    assert say(f"/model promote {run.version}")["message"].startswith(f"Promoted {run.version}:")
    assert registry.promoted() == run.version
    assert say("/model rollback")["message"].startswith("Rolled back DF-GAN")
    assert registry.promoted() is None
