"""The shape of every id a user or a platform can hand back to us, checked in one place.

Ids become Redis key parts and URL path parts, never file paths. Every check is a full match: a
pattern with ``$`` would also accept the id followed by a newline.
"""

from __future__ import annotations

import re

#: Job ids and training run ids: 16 lower-case hex digits (``uuid4().hex[:16]``).
HEX16 = re.compile(r"[0-9a-f]{16}")
#: A web chat's conversation id: a browser-made random token.
CONVERSATION_ID = re.compile(r"[A-Za-z0-9_-]{8,64}")


def is_job_id(value: object) -> bool:
    """Whether ``value`` is exactly a job id."""
    return isinstance(value, str) and HEX16.fullmatch(value) is not None


def is_run_id(value: object) -> bool:
    """Whether ``value`` is exactly a training run id."""
    return isinstance(value, str) and HEX16.fullmatch(value) is not None


def is_conversation_id(value: object) -> bool:
    """Whether ``value`` is exactly a web chat conversation id."""
    return isinstance(value, str) and CONVERSATION_ID.fullmatch(value) is not None
