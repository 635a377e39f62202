"""Redis databases of their own for tests that must not see the session's jobs (or its worker)."""

from __future__ import annotations

import redis

from core.embedded_redis import EmbeddedRedis


def emptied_database(server: EmbeddedRedis, number: int) -> str:
    """The URL of database ``number`` of ``server``, emptied first (no worker consumes there)."""
    url = server.url.rsplit("/", 1)[0] + f"/{number}"
    client = redis.Redis.from_url(url)
    try:
        client.flushdb()
    finally:
        client.close()
    return url
