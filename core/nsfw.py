"""What happens to a picture the safety checker flags: the policy per channel, and its record.

``IMAGINEBOT_NSFW`` (``withhold`` | ``spoiler`` | ``allow``) is the server's rule, and
``IMAGINEBOT_NSFW_<PLATFORM>`` overrides it for one platform. An admin may set a channel's own rule
(:class:`ChannelNsfw`). On Discord, ``spoiler`` and ``allow`` apply only in channels Discord marks NSFW;
everywhere else there a flagged picture is withheld.

Engines mark each flagged picture (``Image.info``): :data:`WITHHELD` (from :mod:`core.compose`) when
it was replaced, :data:`NSFW_ACTION` with ``spoiler`` or ``allowed`` when it was kept. The worker turns
those marks into the job record's :class:`core.jobs.NsfwDecision` list (:func:`decisions_of`); senders
read ``EngineResult.nsfw`` to post a kept picture behind a spoiler.
"""

from __future__ import annotations

from enum import StrEnum

import redis
from PIL import Image

from core.compose import WITHHELD
from core.errors import InputError
from core.jobs import Conversation, EngineResult, JobRequest, NsfwDecision
from core.settings import Settings

#: ``Image.info`` key an engine sets on a flagged picture it kept: ``spoiler`` or ``allowed``.
NSFW_ACTION = "imaginebot_nsfw"


class NsfwPolicy(StrEnum):
    """What a channel does with a flagged picture."""

    WITHHOLD = "withhold"
    SPOILER = "spoiler"
    ALLOW = "allow"


#: The decision recorded for each policy, and the reason shown to the user.
_DECISIONS: dict[NsfwPolicy, tuple[str, str]] = {
    NsfwPolicy.WITHHOLD: (
        "withheld",
        "the safety checker flagged it and this channel withholds such pictures",
    ),
    NsfwPolicy.SPOILER: (
        "spoiler",
        "the safety checker flagged it; this channel shows such pictures behind a spoiler",
    ),
    NsfwPolicy.ALLOW: ("allowed", "the safety checker flagged it; this channel allows such pictures"),
}


def parse_policy(value: str) -> NsfwPolicy:
    """``value`` (any case, spaces around) as a policy; raises :class:`InputError` with the choices."""
    try:
        return NsfwPolicy(value.strip().lower())
    except ValueError:
        raise InputError(
            "bad_nsfw_policy", f"'{value[:30]}' is not an NSFW rule. Use withhold, spoiler or allow."
        ) from None


def platform_policy(settings: Settings, platform: str) -> NsfwPolicy:
    """The server's rule for ``platform``: its override when set, else ``IMAGINEBOT_NSFW``."""
    override = settings.nsfw_overrides.get(platform)
    return parse_policy(override or settings.nsfw)


def channel_policy(
    settings: Settings, platform: str, channel_rule: str | None = None, channel_is_nsfw: bool | None = None
) -> NsfwPolicy:
    """The rule for one channel: an admin's ``channel_rule`` when set, else the platform's; on Discord
    a channel not marked NSFW (``channel_is_nsfw`` False) always withholds."""
    policy = parse_policy(channel_rule) if channel_rule else platform_policy(settings, platform)
    if platform == "discord" and channel_is_nsfw is False:
        return NsfwPolicy.WITHHOLD
    return policy


def request_policy(settings: Settings, request: JobRequest) -> NsfwPolicy:
    """The rule a job is drawn under: what the front-end resolved (``request.nsfw``), else the
    platform's rule."""
    if request.nsfw:
        return parse_policy(request.nsfw)
    return platform_policy(settings, request.conversation.platform)


def conversation_policy(
    settings: Settings, client: redis.Redis, conversation: Conversation, channel_is_nsfw: bool | None = None
) -> NsfwPolicy:
    """The rule for ``conversation``'s channel (its admin-set rule, else the platform's), for the
    front-end to put in ``JobRequest.nsfw``; ``channel_is_nsfw``: Discord's flag for the channel."""
    rule = ChannelNsfw(client).get(conversation.platform, conversation.chat_id)
    return channel_policy(settings, conversation.platform, rule, channel_is_nsfw)


def nsfw_notice(results: list[EngineResult]) -> str | None:
    """One line for the user about the flagged pictures of a finished job, or None when none was."""
    decisions = [d for result in results for d in result.nsfw]
    if not decisions:
        return None
    parts = []
    for action in ("withheld", "spoiler", "allowed"):
        these = [d for d in decisions if d.action == action]
        if these:
            count = f"{len(these)} picture" + ("s" if len(these) > 1 else "")
            verb = {"withheld": "withheld", "spoiler": "behind a spoiler", "allowed": "shown"}[action]
            parts.append(f"{count} {verb}: {these[0].reason}")
    return "; ".join(parts) + "."


def behind_spoiler(results: list[EngineResult]) -> bool:
    """Whether a finished job's picture is posted behind a spoiler: one of its flagged pictures was
    kept under the ``spoiler`` rule (the paired image holds every picture, so all of it is hidden)."""
    return any(d.action == "spoiler" for result in results for d in result.nsfw)


def decision(policy: NsfwPolicy | str, index: int) -> NsfwDecision:
    """The record of image ``index`` having been handled under ``policy``."""
    action, reason = _DECISIONS[NsfwPolicy(policy)]
    return NsfwDecision(index=index, action=action, reason=reason)


def decisions_of(images: list[Image.Image]) -> list[NsfwDecision]:
    """The decisions an engine marked on ``images`` (none for pictures nobody flagged)."""
    out = []
    for i, image in enumerate(images):
        if image.info.get(NSFW_ACTION) == "spoiler":
            out.append(decision(NsfwPolicy.SPOILER, i))
        elif image.info.get(NSFW_ACTION) == "allowed":
            out.append(decision(NsfwPolicy.ALLOW, i))
        elif image.info.get(WITHHELD):
            out.append(decision(NsfwPolicy.WITHHOLD, i))
    return out


class ChannelNsfw:
    """Rules admins set per channel, in Redis (``ib:nsfw:<platform>:<chat_id>``; no expiry)."""

    def __init__(self, client: redis.Redis) -> None:
        self.redis = client

    @staticmethod
    def key(platform: str, chat_id: str) -> str:
        """The Redis key of one channel's rule."""
        return f"ib:nsfw:{platform}:{chat_id}"

    def get(self, platform: str, chat_id: str) -> str | None:
        """The channel's own rule, or None when it follows the server's."""
        raw = self.redis.get(self.key(platform, chat_id))
        return raw.decode() if isinstance(raw, bytes) else None

    def set(self, platform: str, chat_id: str, rule: str | None) -> NsfwPolicy | None:
        """Set the channel's rule (checked), or clear it with None."""
        if rule is None:
            self.redis.delete(self.key(platform, chat_id))
            return None
        policy = parse_policy(rule)
        self.redis.set(self.key(platform, chat_id), policy.value)
        return policy
