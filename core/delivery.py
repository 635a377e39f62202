"""The outbox: what the worker needs from each platform's sender (``bots/<platform>/send.py``).

Every sender module implements :class:`Outbox`: ``send`` posts a job's outcome (the ``deliver``
task), ``notify`` posts a :class:`Notice` (training progress and pictures, a delivery given up).

A sender tells three kinds of failure apart, because only one of them is safe to repeat blindly:

- :class:`DeliveryRetry`: the platform said "later" (429, 5xx) or the request never left (connection
  refused): nothing was posted, so the send is repeated.
- :class:`DeliveryAmbiguous`: the request left but no answer came back (read timeout, connection
  dropped mid-request): it may or may not have been posted. The send is *not* repeated as is; the
  retry runs with :attr:`DeliveryContext.unconfirmed` set and the sender resolves it in a way that
  cannot post the result twice (see docs/reliability.md).
- :class:`DeliveryFailed`: refused for good (bad token, chat gone). Not retried.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from core.jobs import Conversation, JobRecord
from core.nsfw import nsfw_notice
from core.settings import Settings
from core.store import History, ImageStore


class DeliveryRetry(Exception):
    """The platform asked us to come back later (429, 5xx, network).

    Retried after ``retry_after`` seconds when the platform said how long, else with backoff.
    """

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class DeliveryAmbiguous(DeliveryRetry):
    """The request may have been posted: it was sent, and the answer never came (timeout, dropped
    connection). Retried, but only with :attr:`DeliveryContext.unconfirmed` set."""


class DeliveryLocked(DeliveryRetry):
    """Another delivery of the same job holds its lease (alive, or dead and not yet lapsed).

    Retried once the lease can have lapsed; never taken for a success.
    """


class DeliveryFailed(Exception):
    """The platform refused the message for good (bad token, chat gone). Not retried."""


@dataclass
class DeliveryContext:
    """Everything a sender may use."""

    settings: Settings
    images: ImageStore
    history: History
    #: An earlier attempt started a send whose outcome is unknown (it timed out, or its worker
    #: died mid-send). The sender must not post the result again unless it can tell it is missing.
    unconfirmed: bool = False
    #: Call when the request that posts the result has fully left (its last byte written): from then
    #: on the platform may have it. Set for senders that declare ``REPORTS_SENT = True``.
    on_sent: Callable[[], None] | None = None


#: What a sender returns: the result was posted (and confirmed), or an earlier unconfirmed send was
#: left standing and the conversation told so.
POSTED = "posted"
UNCONFIRMED = "unconfirmed"


@dataclass(frozen=True)
class Notice:
    """A message for a conversation that is not a job's result: a training run's progress or
    pictures, or word that a result could not be posted."""

    text: str
    #: The training run it is about (the web chat links it; its pictures are stored under its id).
    run_id: str | None = None
    #: The job it is about (the web chat shows it with that job; it is told once).
    job_id: str | None = None
    #: A picture: its name among the run's stored pictures (``ImageStore.key(run_id, picture)``)...
    picture: str | None = None
    #: ...and its PNG bytes, for platforms that upload it.
    png: bytes | None = None


class Outbox(Protocol):
    """What every ``bots/<platform>/send.py`` module provides (the module itself is the outbox)."""

    #: Whether :meth:`send` calls ``ctx.on_sent`` once its request has fully left.
    REPORTS_SENT: bool

    def send(self, record: JobRecord, ctx: DeliveryContext) -> str | None:
        """Post a finished (or failed, or cancelled) job into its conversation, exactly once.

        Returns :data:`POSTED` (or None) or :data:`UNCONFIRMED`; raises :class:`DeliveryRetry`,
        :class:`DeliveryAmbiguous` or :class:`DeliveryFailed` when it cannot."""
        ...

    def notify(self, conversation: Conversation, notice: Notice, ctx: DeliveryContext) -> None:
        """Post ``notice`` into ``conversation`` once (no retries: callers treat it as best effort).
        Raises :class:`DeliveryRetry` or :class:`DeliveryFailed` when it cannot."""
        ...


#: A chat platform's plain post: ``(conversation, text, settings)``, or with a PNG and its caption.
TextPost = Callable[[Conversation, str, Settings], None]
PhotoPost = Callable[[Conversation, bytes, str, Settings], None]


def post_notice(
    conversation: Conversation, notice: Notice, ctx: DeliveryContext, text: TextPost, photo: PhotoPost
) -> None:
    """:meth:`Outbox.notify` for a chat platform: the picture with the text as its caption when the
    notice has one, else the text alone."""
    if notice.png is not None:
        photo(conversation, notice.png, notice.text, ctx.settings)
    else:
        text(conversation, notice.text, ctx.settings)


def unconfirmed_text(record: JobRecord) -> str:
    """What the status message says when a send timed out and is deliberately not repeated."""
    return (
        f"Your picture “{record.request.prompt[:200]}” was sent, but the chat service did not confirm "
        "it. If it is not here, press Reroll (or send the prompt again)."
    )


def delivery_failed_text(record: JobRecord, attempts: int) -> str:
    """What the conversation is told when the result could not be posted within the retry budget."""
    return (
        f"Sorry, the picture for “{record.request.prompt[:200]}” was drawn but could not be posted "
        f"after {attempts} tries. Please send the prompt again."
    )


def result_caption(record: JobRecord) -> str:
    """The summary shared by all platforms: prompt, seed, engines and timings and the job id (what
    ``/show <job>`` takes) on one line, and on a second what happened to pictures the safety checker
    flagged (:func:`core.nsfw.nsfw_notice`)."""
    parts = [f"“{record.request.prompt}”", f"seed {record.seed}"]
    for result in record.results:
        parts.append(f"{result.engine} {result.version} {result.seconds:.2f} s")
    parts.append(f"job {record.id}")
    notice = nsfw_notice(record.results)
    return " · ".join(parts) + (f"\n{notice}" if notice else "")
