"""NSFW policy per channel: the rule (core), and the engine applying it to pictures a real (tiny)
safety checker flags — withheld, behind a spoiler, or allowed — with the decision recorded."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import redis
from pydantic import ValidationError

from core.compose import WITHHELD
from core.errors import InputError
from core.jobs import Conversation, EngineResult, JobRequest
from core.nsfw import (
    NSFW_ACTION,
    ChannelNsfw,
    NsfwPolicy,
    channel_policy,
    conversation_policy,
    decisions_of,
    nsfw_notice,
    parse_policy,
    platform_policy,
    request_policy,
)
from core.settings import Settings
from tests.helpers.tiny_models import build_checked_pipeline
from training.diffusion import build_tiny_pipeline
from worker.engines.base import GenerationRequest
from worker.engines.diffusion import DiffusionEngine


def test_platform_rules_and_overrides() -> None:
    assert platform_policy(Settings(), "discord") == NsfwPolicy.WITHHOLD  # today's behaviour
    settings = Settings(nsfw="spoiler", nsfw_telegram="allow")
    assert platform_policy(settings, "web") == NsfwPolicy.SPOILER
    assert platform_policy(settings, "telegram") == NsfwPolicy.ALLOW
    assert Settings(nsfw=" Allow ").nsfw == "allow"
    with pytest.raises(ValidationError, match="withhold, spoiler or allow"):
        Settings(nsfw_discord="show")


def test_discord_keeps_flagged_pictures_only_in_channels_marked_nsfw() -> None:
    settings = Settings(nsfw="spoiler")
    assert channel_policy(settings, "discord", channel_is_nsfw=True) == NsfwPolicy.SPOILER
    assert channel_policy(settings, "discord", channel_is_nsfw=False) == NsfwPolicy.WITHHOLD
    assert channel_policy(settings, "discord", "allow", channel_is_nsfw=False) == NsfwPolicy.WITHHOLD
    assert channel_policy(settings, "telegram", "allow") == NsfwPolicy.ALLOW  # an admin's channel rule


def test_request_rule() -> None:
    conversation = Conversation(platform="telegram", chat_id="1")
    asked = JobRequest(prompt="x", user="telegram:1", conversation=conversation)
    assert request_policy(Settings(nsfw_telegram="spoiler"), asked) == NsfwPolicy.SPOILER
    resolved = asked.model_copy(update={"nsfw": "allow"})
    assert request_policy(Settings(nsfw_telegram="spoiler"), resolved) == NsfwPolicy.ALLOW
    with pytest.raises(InputError) as err:
        parse_policy("blur")
    assert err.value.code == "bad_nsfw_policy"


def test_admins_rule_per_channel_is_kept_in_redis(clean_redis: redis.Redis) -> None:
    store = ChannelNsfw(clean_redis)
    assert store.get("discord", "42") is None
    assert store.set("discord", "42", "SPOILER") == NsfwPolicy.SPOILER
    assert store.get("discord", "42") == "spoiler"
    assert store.get("discord", "43") is None
    with pytest.raises(InputError):
        store.set("discord", "42", "maybe")
    channel = Conversation(platform="discord", chat_id="42")
    settings = Settings(nsfw="withhold")
    assert conversation_policy(settings, clean_redis, channel, channel_is_nsfw=True) == NsfwPolicy.SPOILER
    assert conversation_policy(settings, clean_redis, channel, channel_is_nsfw=False) == NsfwPolicy.WITHHOLD
    store.set("discord", "42", None)
    assert store.get("discord", "42") is None
    assert conversation_policy(settings, clean_redis, channel, channel_is_nsfw=True) == NsfwPolicy.WITHHOLD


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> DiffusionEngine:
    root = tmp_path_factory.mktemp("nsfw")
    checked = build_checked_pipeline(build_tiny_pipeline(root / "tiny"), root / "checked")
    return DiffusionEngine(str(checked), root, device="cpu")


def test_each_request_gets_its_channels_rule_in_one_batch(engine: DiffusionEngine, tmp_path: Path) -> None:
    flagged_before = engine.flagged_images
    out = engine.generate(
        [
            GenerationRequest("a red circle", [1], 2, nsfw="withhold"),
            GenerationRequest("a red circle", [1], 2, nsfw="spoiler"),
            GenerationRequest("a red circle", [1], 2, nsfw="allow"),
        ]
    )
    (withheld,), (spoiler,), (allowed,) = out
    assert np.asarray(withheld).max() == 0 and withheld.info[WITHHELD] == "safety checker"
    assert np.asarray(spoiler).std() > 1 and spoiler.info[NSFW_ACTION] == "spoiler"
    # The real picture, same seed (batched convolutions may round 1-2 levels apart on a CPU).
    assert np.abs(np.asarray(spoiler, np.int16) - np.asarray(allowed, np.int16)).max() <= 2
    assert allowed.info[NSFW_ACTION] == "allowed" and WITHHELD not in allowed.info
    assert engine.flagged_images == flagged_before + 3
    decisions = [decisions_of(images) for images in out]
    assert [[d.action for d in ds] for ds in decisions] == [["withheld"], ["spoiler"], ["allowed"]]
    assert "withholds" in decisions[0][0].reason and "spoiler" in decisions[1][0].reason
    result = EngineResult(engine="diffusion", version="v", seconds=1, image_keys=[], nsfw=decisions[0] * 2)
    others = EngineResult(engine="diffusion", version="v", seconds=1, image_keys=[], nsfw=decisions[1])
    assert nsfw_notice([result, others]) == (
        "2 pictures withheld: the safety checker flagged it and this channel withholds such pictures; "
        "1 picture behind a spoiler: the safety checker flagged it; this channel shows such pictures "
        "behind a spoiler."
    )
    assert nsfw_notice([EngineResult(engine="dfgan", version="v", seconds=1, image_keys=[])]) is None


def test_pictures_nobody_flagged_have_no_decision(tmp_path: Path) -> None:
    engine = DiffusionEngine(str(build_tiny_pipeline(tmp_path / "tiny")), tmp_path, device="cpu")
    (images,) = engine.generate([GenerationRequest("a cat", [1, 2], 2, nsfw="spoiler")])
    assert decisions_of(images) == []
