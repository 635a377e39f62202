"""Bring a crashed test Redis back: the session's server is shared by hundreds of tests, and a
server-side crash (see docs/reliability.md) must fail the test it hit, not every test after it."""

from __future__ import annotations

from core.embedded_redis import EmbeddedRedis


def revive_if_dead(server: EmbeddedRedis, where: str) -> str | None:
    """If ``server``'s process has exited, keep its log as ``redis-crash-N.log``, start it again on
    the same port (empty: the tests' Redis does not persist) and return a one-line report naming
    ``where`` it was noticed, the exit status, the kept log and its crash lines; None if it is alive."""
    if server.process is None or server.process.poll() is None:
        return None
    status = server.process.returncode
    log = server.workdir / "redis.log"
    kept_before = len(list(server.workdir.glob("redis-crash-*.log")))
    kept = server.workdir / f"redis-crash-{kept_before + 1}.log"
    text = log.read_text(errors="replace") if log.exists() else "(no log)"
    kept.write_text(text)
    log.unlink(missing_ok=True)
    crash_lines = [line for line in text.splitlines() if "Guru Meditation" in line or "argv[" in line]
    server.start()
    lines = " | ".join(crash_lines[:4]) or "no crash report in the log"
    return f"before {where}: redis-server exited with {status}; log kept in {kept}; {lines}"
