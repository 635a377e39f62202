"""A bounded stop for the bot processes: SIGTERM (or Ctrl-C) starts a graceful stop, and the process
exits within :data:`STOP_DEADLINE_S` even when the graceful part hangs (a chat API that does not
answer, a Redis that is gone).
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable

log = logging.getLogger(__name__)

#: How long a graceful stop may take before the process exits anyway.
STOP_DEADLINE_S = 5.0
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def exit_within(seconds: float, code: int = 1) -> threading.Timer:
    """Make sure this process ends within ``seconds``: a daemon timer exits it hard if still running."""

    def force() -> None:
        sys.stderr.write(f"did not stop within {seconds:.0f} s of the stop signal; exiting now\n")
        sys.stderr.flush()
        os._exit(code)

    timer = threading.Timer(seconds, force)
    timer.daemon = True
    timer.start()
    return timer


def on_stop_signals(
    loop: asyncio.AbstractEventLoop, stop: Callable[[], None], deadline_s: float = STOP_DEADLINE_S
) -> None:
    """On SIGINT/SIGTERM, call ``stop`` (in ``loop``) and exit within ``deadline_s`` whatever it does.

    ``stop`` may raise (``SystemExit`` unwinds ``run_until_complete``, as python-telegram-bot's own
    handlers do). Must be called from the main thread, before ``loop`` runs.
    """
    armed: list[threading.Timer] = []

    def handler() -> None:
        if not armed:
            log.info("stop signal: stopping (at most %.0f s)", deadline_s)
            armed.append(exit_within(deadline_s))
        stop()

    for sig in STOP_SIGNALS:
        loop.add_signal_handler(sig, handler)
