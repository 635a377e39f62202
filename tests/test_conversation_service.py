"""The conversation service on a real Redis: every action a front-end calls, and its typed reply.

No worker runs here (database 11, emptied): queued jobs stay queued, so cancels and positions are
certain. The front-ends' own tests check the rendering of the same replies on each platform.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from core.conversation import (
    Again,
    Caller,
    Cancel,
    Cancelled,
    ConversationService,
    FromText,
    Help,
    HelpShown,
    Imagine,
    JobInfo,
    JobList,
    JobSettings,
    ModelShown,
    Prepared,
    Queued,
    Refused,
    Retrain,
    RetrainCancel,
    RetrainCancelled,
    RetrainQueued,
    SettingsShown,
    ShowModel,
    ShowQueue,
    UserSettings,
    status_line,
)
from core.embedded_redis import EmbeddedRedis
from core.job_client import QueueClient
from core.jobs import Conversation, JobStatus, Progress
from core.settings import Settings
from tests.helpers.databases import emptied_database
from tests.helpers.settings import make_settings

ADMIN = "42"


@pytest.fixture
def service(redis_server: EmbeddedRedis, tmp_path: Path) -> ConversationService:
    url = emptied_database(redis_server, 11)
    settings: Settings = make_settings(url, tmp_path, engines="dfgan", admin_ids=f"telegram:{ADMIN}")
    return ConversationService(settings, QueueClient(settings))


def caller(service: ConversationService, user_id: str = "7", chat_id: str = "100") -> Caller:
    return service.caller(user_id, Conversation(platform="telegram", chat_id=chat_id, reply_to="1"))


def queued(reply: object) -> Queued:
    assert isinstance(reply, Queued), reply
    return reply


def test_imagine_with_structured_options_or_text_queues_the_same_job(service: ConversationService) -> None:
    me = caller(service)
    typed = queued(service.handle(me, Imagine(prompt="a red circle", seed=5, steps=2)))
    said = queued(service.handle(me, FromText(Imagine, "/imagine a red circle --seed 5 --steps 2")))
    for reply in (typed, said):
        assert (reply.record.seed, reply.record.steps, reply.record.request.engines) == (5, 2, ["dfgan"])
        assert reply.record.request.user == "telegram:7"
        assert reply.record.status == JobStatus.QUEUED
    assert (typed.position, said.position) == (1, 2)
    assert said.text.startswith("Queued — position 2 of 2")
    assert said.titled_text.startswith("Queued “a red circle” (dfgan, seed 5), position 2 of 2")


def test_bad_input_is_a_refusal_and_nothing_is_queued(service: ConversationService) -> None:
    me = caller(service)
    for action, code in [
        (FromText(Imagine, "a cat --colour red"), "unknown_flag"),
        (Imagine(prompt="   "), "empty_prompt"),
        (Imagine(prompt="a cat", steps=1000), "steps_out_of_range"),
        (Imagine(prompt="a cat", engines=["shell"]), "unknown_engine"),
    ]:
        reply = service.handle(me, action)
        assert isinstance(reply, Refused) and reply.code == code and not reply.ok, reply
    assert service.queue.user_jobs(me.user, unfinished_only=False) == []


def test_prepare_then_submit_records_the_status_message(service: ConversationService) -> None:
    prepared = service.prepare(caller(service), Imagine(prompt="a blue square"))
    assert isinstance(prepared, Prepared) and prepared.text == "Queued…"
    reply = queued(service.submit(prepared, status_message_id="55"))
    assert reply.record.request.conversation.status_message_id == "55"


def test_defaults_are_shown_changed_validated_and_reset(service: ConversationService) -> None:
    me = caller(service, "8")
    shown = service.handle(me, UserSettings())
    assert isinstance(shown, SettingsShown) and shown.count == 1 and shown.engines == ["dfgan"]
    changed = service.handle(me, FromText(UserSettings, "--steps 3 --n 2"))
    assert isinstance(changed, SettingsShown) and (changed.steps, changed.count) == (3, 2)
    assert "--steps 3 --size 64 --n 2" in changed.text and changed.summary.endswith("count 2")
    refused = service.handle(me, UserSettings(steps=1000))
    assert isinstance(refused, Refused) and refused.code == "steps_out_of_range"
    for text in ("a cat --steps 3", "--seed 3"):
        bad = service.handle(me, FromText(UserSettings, text))
        assert isinstance(bad, Refused) and bad.code == "bad_settings"
    record = queued(service.handle(me, Imagine(prompt="a green triangle"))).record
    assert (record.steps, record.request.count) == (3, 2)  # the defaults, not the refused change
    reset = service.handle(me, UserSettings(reset=True))
    assert isinstance(reset, SettingsShown) and reset.count == 1


def test_cancel_the_latest_or_an_id_only_of_ones_own_jobs(service: ConversationService) -> None:
    me, other = caller(service, "9"), caller(service, "10")
    nothing = service.handle(me, Cancel())
    assert isinstance(nothing, Refused) and nothing.text == "You have no pictures waiting or in progress."
    first = queued(service.handle(me, Imagine(prompt="first"))).record
    second = queued(service.handle(me, Imagine(prompt="second"))).record
    latest = service.handle(me, Cancel())
    assert isinstance(latest, Cancelled) and latest.record.id == second.id
    assert latest.text == "Cancelled “second”."
    theirs = service.handle(other, Cancel(first.id))
    assert isinstance(theirs, Refused) and theirs.code == "not_your_job"
    for job_id in ("../../etc/passwd", "0" * 16):
        unknown = service.handle(me, FromText(Cancel, job_id))
        assert isinstance(unknown, Refused) and unknown.text == "No such job (it may have expired)."
    again = service.handle(me, Cancel(second.id.upper()))
    assert isinstance(again, Refused) and again.code == "already_finished"
    listed = service.handle(me, ShowQueue())
    assert isinstance(listed, JobList) and [r.id for r, _ in listed.jobs] == [first.id]
    assert listed.text.startswith(f"• {first.id} “first” — Queued — position")


def test_again_and_job_info_act_only_on_a_job_of_the_callers_chat(service: ConversationService) -> None:
    original = queued(service.handle(caller(service, "11"), Imagine(prompt="a tree", seed=4, steps=2))).record
    presser = caller(service, "12")  # someone else, in the same chat
    reroll = queued(service.handle(presser, Again(original.id)))
    assert reroll.record.request.prompt == "a tree" and reroll.record.request.user == "telegram:12"
    assert reroll.record.steps == 2 and reroll.record.id != original.id
    variation = service.prepare(presser, Again(original.id, engine="dfgan"))
    assert isinstance(variation, Prepared) and variation.text == "Drawing a variation…"
    info = service.handle(presser, JobInfo(original.id))
    assert isinstance(info, JobSettings) and "seed 4" in info.text and "steps 2" in info.text
    elsewhere = caller(service, "12", chat_id="200")
    for action in (Again(original.id), JobInfo(original.id)):
        refused = service.handle(elsewhere, action)
        assert isinstance(refused, Refused) and refused.code == "not_this_chat"
    expired = service.handle(presser, Again("f" * 16))
    assert isinstance(expired, Refused) and expired.code == "expired"


def test_admin_commands_check_the_admin_before_reading_the_text(service: ConversationService) -> None:
    someone, admin = caller(service, "13"), caller(service, ADMIN)
    assert not someone.is_admin and admin.is_admin
    for action, text in [
        (FromText(Retrain, "dataset:../etc epochs:x"), "Only admins can retrain the model."),
        (Retrain(dataset="shapes"), "Only admins can retrain the model."),
        (FromText(RetrainCancel, "cancel ../x"), "Only admins can cancel training runs."),
        (ShowModel(), "Only admins can see and change the model."),
    ]:
        refused = service.handle(someone, action)
        assert isinstance(refused, Refused) and (refused.code, refused.text) == ("not_admin", text)
    unknown = service.handle(admin, FromText(Retrain, "/retrain dataset:../etc"))
    assert isinstance(unknown, Refused) and unknown.text.startswith(
        "Unknown dataset '../etc'. Known datasets:"
    )
    typed = service.handle(admin, Retrain(dataset=" Shapes ", epochs=2))
    assert isinstance(typed, RetrainQueued) and typed.run.dataset == "shapes"
    assert typed.text.startswith(f"Queued training run {typed.run.id}: DF-GAN on shapes, 2 epochs.")
    said = service.handle(admin, FromText(Retrain, "/retrain dataset:shapes epochs:1 model:diffusion"))
    assert isinstance(said, RetrainQueued) and said.run.model == "diffusion"
    cancelled = service.handle(admin, FromText(RetrainCancel, "/retrain cancel"))
    assert isinstance(cancelled, RetrainCancelled) and cancelled.run.id == said.run.id
    assert cancelled.text.startswith(f"Cancelled training run {said.run.id} (diffusion on shapes);")
    bad = service.handle(admin, RetrainCancel(run_id="../x"))
    assert isinstance(bad, Refused) and bad.code == "bad_run_id"
    model = service.handle(admin, ShowModel())
    assert isinstance(model, ModelShown) and model.text.startswith("Engines: dfgan")
    assert isinstance(service.handle(someone, Help()), HelpShown)


def test_the_status_line_follows_the_job(service: ConversationService) -> None:
    record = queued(service.handle(caller(service), Imagine(prompt="a cat", seed=1))).record
    assert status_line(record, None) == "Queued — starting soon"
    assert status_line(record, 3, "No worker is up.") == "Queued — position 3\nNo worker is up."
    record.status, record.progress = JobStatus.RUNNING, Progress(engine="dfgan", step=1, total=4)
    assert status_line(record, None) == "Drawing — dfgan step 1/4"
    assert status_line(record, None, titled=True) == "Drawing “a cat” (dfgan, seed 1): dfgan step 1/4."
    record.status, record.error = JobStatus.FAILED, "out of memory"
    assert status_line(record, None) == "Failed"
    assert status_line(record, None, titled=True) == "Failed: “a cat” (dfgan, seed 1): out of memory"
    record.status = JobStatus.DONE
    assert status_line(record, None) == "Done — finishing up…"  # until the result is posted
    record.delivered_at = record.created_at
    assert status_line(record, None) == "Done"


def test_the_preference_store_needs_no_validation_module() -> None:
    """Defaults are validated by the service; the store and the rules do not import each other."""
    import subprocess
    import sys

    code = "import sys, core.preferences; assert 'core.validation' not in sys.modules, 'imported'"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
