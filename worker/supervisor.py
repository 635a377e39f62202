"""Process supervision for ``imaginebot up``: start the children, watch them, bring back the ones
that die or hang, and stop them all, in order, when asked.

- A child that exits (or, for a worker, whose heartbeat in Redis expires) is restarted after a
  backoff that doubles with each crash in a row; after ``max_crashes`` crashes in a row it is given
  up on, loudly (terminal, and the report the web chat's health and ``imaginebot status`` read).
- :meth:`Supervisor.request_stop` is what the signal handlers call. The first request starts the
  ordered stop (groups in ascending order: bots, then workers, each given its grace period to finish
  the task in hand); further requests only shorten the grace — every child is still stopped, and
  killed if it does not stop. Nothing here raises from a signal handler, so no second Ctrl-C can
  interrupt a ``finally`` and leave a child behind.
- Every child is started with ``PR_SET_PDEATHSIG`` (Linux), so it is killed when ``up`` dies, even
  by SIGKILL. The kernel sends that signal when the *thread* that forked the child ends, so all
  children are started from the thread that runs the supervisor (the main thread of ``up``).
"""

from __future__ import annotations

import logging
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import redis

from core import heartbeats
from core.child_processes import die_with_parent
from core.heartbeats import ChildState, SupervisorReport

log = logging.getLogger(__name__)

POLL_S = 0.5
#: Grace once a second stop request came (a third one kills at once).
SHORT_GRACE_S = 3.0


@dataclass
class ChildSpec:
    """How to run one child and how to treat it."""

    name: str
    argv: list[str]
    env: dict[str, str] | None = None
    group: int = 0
    """Stop order: lower groups stop first (bots before workers)."""
    grace_s: float = 30.0
    """How long a SIGTERM'd child may take (a worker finishes its task in hand) before SIGKILL."""
    heartbeat: bool = False
    """Watch its heartbeat in Redis (``core.heartbeats``): a worker that stops beating is restarted."""
    queues: list[str] = field(default_factory=list)
    """A worker's queues (reported, so front-ends can tell a starting image worker)."""
    death_signal: int = signal.SIGKILL
    """What the child gets when ``up`` dies without stopping it."""


@dataclass
class Child:
    """A supervised child: its spec, its current process and its history."""

    spec: ChildSpec
    proc: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    crashes: int = 0
    """Crashes in a row (reset once it has run ``stable_s``)."""
    restarts: int = 0
    restart_at: float | None = None
    gave_up: bool = False
    message: str | None = None
    beat_seen_at: float | None = None
    stopped: bool = False

    @property
    def pid(self) -> int | None:
        """PID of the current process, if one runs."""
        return self.proc.pid if self.proc is not None and self.proc.poll() is None else None

    def state(self) -> str:
        """running | restarting | gave up | stopped."""
        if self.gave_up:
            return "gave up"
        if self.stopped:
            return "stopped"
        if self.pid is None:
            return "restarting"
        return "running"


def describe_exit(code: int) -> str:
    """``exit code 1`` or ``killed by SIGKILL``."""
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


@dataclass
class Supervisor:
    """Starts, watches, restarts and stops the children of ``imaginebot up``."""

    specs: list[ChildSpec]
    redis_client: redis.Redis | None = None
    say: Callable[[str], None] = print
    backoff_s: float = 1.0
    max_backoff_s: float = 30.0
    max_crashes: int = 5
    stable_s: float = 60.0
    """A child that ran this long is healthy again: its crash count starts over."""
    start_timeout_s: float = 600.0
    """A worker that has not published a heartbeat this long after its start is presumed hung."""
    heartbeat_ttl_s: float = heartbeats.BEAT_TTL_S
    name: str = field(default_factory=heartbeats.worker_name)
    children: list[Child] = field(init=False)
    stop_requests: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        self.children = [Child(spec) for spec in self.specs]
        self._wake = threading.Event()
        self._thread = threading.get_ident()
        self._stopped = False
        self._reported_at = 0.0
        self._announced = 0

    # --- starting and watching -------------------------------------------------------------------
    def add(self, *specs: ChildSpec) -> None:
        """Supervise these children too (started by :meth:`start`)."""
        self.specs.extend(specs)
        self.children.extend(Child(spec) for spec in specs)

    def start(self) -> Supervisor:
        """Start every child."""
        for child in self.children:
            self._spawn(child)
        self.report()
        return self

    def _spawn(self, child: Child) -> None:
        # The kernel's parent-death signal follows the forking thread: only ours may fork.
        assert threading.get_ident() == self._thread, "children must be started from the supervisor's thread"
        spec = child.spec
        child.proc = subprocess.Popen(
            spec.argv,
            env=spec.env,
            start_new_session=True,  # a terminal Ctrl-C reaches only `up`, which stops them in order
            preexec_fn=die_with_parent(spec.death_signal),  # noqa: PLW1509 - fork from one thread only
        )
        child.started_at = time.monotonic()
        child.restart_at = None
        child.beat_seen_at = None
        child.message = None
        log.info("started %s (pid %d)", spec.name, child.proc.pid)

    def run(self) -> None:
        """Watch the children until a stop is requested (see :meth:`request_stop`)."""
        while not self.stop_requests:
            self.check()
            self._wake.wait(POLL_S)
            self._wake.clear()

    def check(self) -> None:
        """One round: notice exits and silent workers, restart what is due, publish the report."""
        now = time.monotonic()
        changed = False
        for child in self.children:
            if child.gave_up or child.stopped or self.stop_requests:
                continue
            proc = child.proc
            if proc is not None and proc.poll() is not None:
                self._crashed(child, describe_exit(proc.returncode))
                changed = True
            elif proc is not None and child.spec.heartbeat and self._silent(child, now):
                self._kill(proc)
                self._crashed(child, "stopped answering (no heartbeat)")
                changed = True
            elif proc is None and child.restart_at is not None and now >= child.restart_at:
                child.restarts += 1
                self._spawn(child)
                assert child.proc is not None
                self.say(f"restarted {child.spec.name} (pid {child.proc.pid}, restart {child.restarts})")
                changed = True
        if changed or time.monotonic() - self._reported_at >= heartbeats.BEAT_INTERVAL_S:
            self.report()

    def _silent(self, child: Child, now: float) -> bool:
        """Whether a watched worker has stopped beating (never when Redis cannot be read)."""
        if self.redis_client is None or child.proc is None:
            return False
        try:
            alive = self.redis_client.exists(heartbeats.worker_key(heartbeats.worker_name(child.proc.pid)))
        except redis.RedisError:
            # Unknown, not silent: and once Redis is back, give the worker a full TTL to beat again.
            if child.beat_seen_at is not None:
                child.beat_seen_at = now
            return False
        if alive:
            if child.beat_seen_at is None:
                self._reported_at = 0.0  # no longer "starting": report it at the end of this round
            child.beat_seen_at = now
            return False
        if child.beat_seen_at is None:
            return now - child.started_at > self.start_timeout_s
        return now - child.beat_seen_at > self.heartbeat_ttl_s

    def _crashed(self, child: Child, how: str) -> None:
        """Book a crash: schedule the restart with backoff, or give up."""
        assert child.proc is not None
        pid = child.proc.pid
        self._forget_heartbeat(child.spec, pid)
        ran_s = time.monotonic() - child.started_at
        child.crashes = 1 if ran_s >= self.stable_s else child.crashes + 1
        child.proc = None
        child.beat_seen_at = None  # reported as starting again until the new process beats
        if child.crashes >= self.max_crashes:
            child.gave_up = True
            child.message = (
                f"{child.spec.name} crashed {child.crashes} times in a row (last: {how}); gave up on it. "
                "See its log above, fix the cause and restart `imaginebot up`."
            )
            self.say(f"[red]{child.spec.name} (pid {pid}) {how}. {child.message}[/red]")
            return
        delay = min(self.max_backoff_s, self.backoff_s * 2 ** (child.crashes - 1))
        child.restart_at = time.monotonic() + delay
        child.message = f"{child.spec.name} {how}; restarting"
        self.say(f"[yellow]{child.spec.name} (pid {pid}) {how}; restarting it in {delay:.0f} s[/yellow]")

    def _forget_heartbeat(self, spec: ChildSpec, pid: int) -> None:
        # A dead worker's heartbeat would otherwise claim it for up to the TTL.
        if spec.heartbeat and self.redis_client is not None:
            try:
                heartbeats.remove(self.redis_client, heartbeats.worker_name(pid))
            except redis.RedisError:
                pass

    def report(self) -> SupervisorReport:
        """The children's state, published to Redis (when there is one) for health checks."""
        report = SupervisorReport(
            name=self.name,
            children=[
                ChildState(
                    name=c.spec.name,
                    pid=c.pid,
                    state=c.state(),
                    restarts=c.restarts,
                    message=c.message,
                    queues=c.spec.queues,
                    starting=c.spec.heartbeat and not c.gave_up and c.beat_seen_at is None,
                )
                for c in self.children
            ],
        )
        self._reported_at = time.monotonic()
        if self.redis_client is not None and not self._stopped:
            try:
                heartbeats.publish_supervisor(self.redis_client, report)
            except redis.RedisError as exc:
                log.debug("supervisor report not published: %s", exc)
        return report

    # --- stopping --------------------------------------------------------------------------------
    def request_stop(self, signum: int | None = None, frame: object = None) -> None:
        """Ask for a stop; safe as a signal handler. The first call starts the stop, each later one
        shortens the grace period of the children still stopping."""
        self.stop_requests += 1
        self._wake.set()

    def grace_s(self, spec: ChildSpec) -> float:
        """The grace ``spec``'s child gets now: its own, then :data:`SHORT_GRACE_S`, then none."""
        if self.stop_requests <= 1:
            return spec.grace_s
        if self.stop_requests == 2:
            return min(spec.grace_s, SHORT_GRACE_S)
        return 0.0

    def stop(self, say_each: bool = True) -> None:
        """Stop every child, group by group (idempotent). SIGTERM, wait its grace, SIGKILL."""
        if self._stopped:
            return
        self.stop_requests = max(self.stop_requests, 1)
        self._announced = 1
        for group in sorted({c.spec.group for c in self.children}):
            members = [c for c in self.children if c.spec.group == group]
            for child in members:
                child.restart_at = None
                if child.pid is not None:
                    child.proc.send_signal(signal.SIGTERM)  # type: ignore[union-attr]
            began = time.monotonic()
            for child in members:
                self._await_stop(child, began, say_each)
        self._stopped = True
        if self.redis_client is not None:
            try:
                heartbeats.remove_supervisor(self.redis_client, self.name)
            except redis.RedisError:
                pass

    def _await_stop(self, child: Child, began: float, say_each: bool) -> None:
        proc = child.proc
        child.stopped = True
        if proc is None:
            return
        while proc.poll() is None:
            if self.stop_requests > self._announced:  # said here: a signal handler must not print
                self._announced = self.stop_requests
                self.say(
                    f"stop requested again: grace shortened to {SHORT_GRACE_S:.0f} s"
                    if self.stop_requests == 2
                    else "stop requested again: grace shortened to none, killing what is left"
                )
            if time.monotonic() - began >= self.grace_s(child.spec):
                if say_each:
                    name = child.spec.name
                    self.say(f"[yellow]{name} (pid {proc.pid}) did not stop in time; killing it[/yellow]")
                self._kill(proc)
                break
            time.sleep(0.05)
        self._forget_heartbeat(child.spec, proc.pid)

    @staticmethod
    def _kill(proc: subprocess.Popen[bytes]) -> None:
        """SIGKILL and reap (a killed process always goes; the wait is only for the kernel)."""
        if proc.poll() is None:
            proc.kill()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:  # unkillable (D state): nothing more we can do
            log.error("pid %d did not die after SIGKILL", proc.pid)
