"""The conversation service's image input, model choice and NSFW actions on a real Redis (no worker:
jobs stay queued, so what the request carries is what the worker would get)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from core.conversation import (
    Again,
    Caller,
    ChannelNsfw,
    ConversationService,
    FromText,
    Imagine,
    ModelsShown,
    NsfwRuleShown,
    Queued,
    Refused,
    ShowModels,
    UserSettings,
)
from core.embedded_redis import EmbeddedRedis
from core.errors import InputError
from core.job_client import QueueClient
from core.jobs import Conversation
from tests.helpers.databases import emptied_database
from tests.helpers.pictures import picture
from tests.helpers.settings import make_settings

ADMIN = "42"


@pytest.fixture
def service(redis_server: EmbeddedRedis, tmp_path: Path) -> ConversationService:
    url = emptied_database(redis_server, 12)
    (tmp_path / "ink.safetensors").write_bytes(b"")
    settings = make_settings(
        url,
        tmp_path,
        engines="dfgan,diffusion",
        admin_ids=f"telegram:{ADMIN},discord:{ADMIN}",
        diffusion_models="anime=/models/anime|Anime and cartoons",
        diffusion_default_description="General pictures",
        lora_dir=tmp_path,
        nsfw="spoiler",
    )
    return ConversationService(settings, QueueClient(settings))


def on(service: ConversationService, platform: str, user: str = "7", chat: str = "100") -> Caller:
    return service.caller(user, Conversation(platform=platform, chat_id=chat))


def test_an_upload_strength_model_and_loras_reach_the_queued_request(service: ConversationService) -> None:
    key = service.uploads.put(picture())
    me = on(service, "telegram")
    text = "/imagine a red bird --strength 0.4 --model Anime --lora ink:0.5"
    for action in (FromText(Imagine, text, image_key=key), replace(Imagine.from_text(text), image_key=key)):
        reply = service.handle(me, action)
        assert isinstance(reply, Queued), reply
        req = reply.record.request
        assert (req.image_key, req.strength, req.model) == (key, 0.4, "anime")
        assert [(lo.name, lo.weight) for lo in req.loras] == [("ink", 0.5)]
    default = service.handle(me, FromText(Imagine, "a red bird", image_key=key))
    assert isinstance(default, Queued) and default.record.request.strength == 0.6


def test_bad_uploads_and_options_are_refused_with_their_codes(service: ConversationService) -> None:
    me = on(service, "web")
    with pytest.raises(InputError) as err:
        service.uploads.put(b"not a picture")
    assert err.value.code == "image_unreadable"
    gone = "ib:upload:" + "0" * 32
    cases = [
        (FromText(Imagine, "a cat", image_key=gone), "image_expired"),
        (FromText(Imagine, "a cat", image_key="/etc/passwd"), "image_expired"),
        (FromText(Imagine, "a cat --strength 0.5"), "strength_without_image"),
        (FromText(Imagine, "a cat --model nope"), "unknown_model"),
        (FromText(Imagine, "a cat --lora nope"), "bad_lora"),
    ]
    for action, code in cases:
        reply = service.handle(me, action)
        assert isinstance(reply, Refused) and reply.code == code, (action, reply)
    key = service.uploads.put(picture())
    reply = service.handle(me, FromText(Imagine, "a cat --strength 1.5", image_key=key))
    assert isinstance(reply, Refused) and reply.code == "strength_out_of_range"
    assert service.queue.user_jobs("web:7") == []
    defaults = service.handle(me, FromText(UserSettings, "--model anime --lora ink"))
    assert isinstance(defaults, Refused) and defaults.code == "bad_settings"  # per prompt, not defaults


def test_models_are_listed_with_descriptions_and_loras(service: ConversationService) -> None:
    reply = service.handle(on(service, "telegram"), ShowModels())
    assert isinstance(reply, ModelsShown)
    assert "• default: General pictures" in reply.text
    assert "• anime: Anime and cartoons" in reply.text
    assert reply.loras == ["ink"] and "ink" in reply.text


def test_an_admin_sets_the_channel_rule_and_jobs_carry_it(service: ConversationService) -> None:
    user, admin = on(service, "telegram"), on(service, "telegram", ADMIN)
    refused = service.handle(user, FromText(ChannelNsfw, "/nsfw allow"))
    assert isinstance(refused, Refused) and refused.code == "not_admin"
    assert "Only admins" in refused.text
    shown = service.handle(admin, FromText(ChannelNsfw, ""))
    assert isinstance(shown, NsfwRuleShown) and shown.text.startswith("This channel follows the server's")
    assert queued_rule(service, user) == "spoiler"  # the server's rule
    changed = service.handle(admin, FromText(ChannelNsfw, "/nsfw WITHHOLD"))
    assert isinstance(changed, NsfwRuleShown)
    assert changed.text == "This channel's NSFW rule is now withhold: flagged pictures are withheld."
    assert queued_rule(service, user) == "withhold"
    assert queued_rule(service, on(service, "telegram", chat="other")) == "spoiler"  # only this channel
    bad = service.handle(admin, FromText(ChannelNsfw, "/nsfw maybe"))
    assert isinstance(bad, Refused) and bad.code == "bad_nsfw_policy"
    assert service.handle(admin, ChannelNsfw(rule="sometimes")).code == "bad_nsfw_policy"
    cleared = service.handle(admin, FromText(ChannelNsfw, "/nsfw default"))
    assert "now follows the server's NSFW rule: spoiler" in cleared.text
    assert queued_rule(service, user) == "spoiler"


def test_discord_channels_not_marked_nsfw_withhold(service: ConversationService) -> None:
    me, admin = on(service, "discord"), on(service, "discord", ADMIN)
    assert queued_rule(service, me, channel_is_nsfw=True) == "spoiler"
    assert queued_rule(service, me, channel_is_nsfw=False) == "withhold"
    assert queued_rule(service, me) == "withhold"  # not said: treated as not marked
    first = service.handle(me, Imagine(prompt="a cat", channel_is_nsfw=True))
    assert isinstance(first, Queued)
    again = service.handle(me, Again(first.record.id))
    assert isinstance(again, Queued) and again.record.request.nsfw == "withhold"
    reply = service.handle(admin, ChannelNsfw(rule="allow", channel_is_nsfw=False))
    assert isinstance(reply, NsfwRuleShown) and (reply.rule, reply.channel_rule) == ("withhold", "allow")
    assert "not marked NSFW on Discord" in reply.text


def queued_rule(service: ConversationService, caller: Caller, channel_is_nsfw: bool | None = None) -> str:
    reply = service.handle(caller, Imagine(prompt="a cat", channel_is_nsfw=channel_is_nsfw))
    assert isinstance(reply, Queued), reply
    assert reply.record.request.nsfw is not None
    return reply.record.request.nsfw
