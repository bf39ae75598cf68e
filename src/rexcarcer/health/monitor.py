"""When each jail is probed, and what a run of probe results means. Pure: the
agent (agent/supervise.py) runs the probes and records the verdicts.

A jail is watched from its start (the ``started`` of its health record): probed
at once, then every INTERVAL after each probe began (or right after a probe
that took longer). One passing probe makes it healthy; RETRIES failed probes in
a row make it unhealthy. A new start of the jail (another ``started``) begins
again from "starting"; results of probes from an earlier run are dropped.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from rexcarcer.model.health import Health
from rexcarcer.rexfile.ast import HealthCheck


@dataclass
class Watch:
    name: str
    check: HealthCheck
    started: float  # the run being watched (health record's ``started``)
    state: Health  # STARTING, HEALTHY or UNHEALTHY
    failures: int = 0  # failed probes in a row
    due: float = 0.0  # monotonic time of the next probe
    probing_since: float | None = None  # a probe runs (monotonic start)


@dataclass(frozen=True, slots=True)
class Verdict:
    """A change of a jail's health, to be recorded and acted on."""

    name: str
    started: float
    state: Health
    previous: Health
    reason: str


@dataclass(frozen=True, slots=True)
class Tracked:
    """What the agent knows of a running jail with a check."""

    check: HealthCheck
    started: float
    state: Health  # as recorded (an agent that restarts keeps the verdict)


class Monitor:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.watches: dict[str, Watch] = {}

    def track(self, jails: Mapping[str, Tracked]) -> None:
        """Watch exactly ``jails``: new ones (and new runs) from now, with a probe
        at once; jails no longer running (or without a check) are forgotten."""
        now = self.clock()
        for name in set(self.watches) - set(jails):
            del self.watches[name]
        for name, t in jails.items():
            w = self.watches.get(name)
            if w is not None and w.started == t.started and w.check == t.check:
                continue
            state = t.state if t.state in (Health.HEALTHY, Health.UNHEALTHY) else Health.STARTING
            self.watches[name] = Watch(name, t.check, t.started, state, due=now)

    def due(self) -> list[Watch]:
        """The watches whose probe is due, marked as probing."""
        now = self.clock()
        out = [w for w in self.watches.values() if w.probing_since is None and w.due <= now]
        for w in out:
            w.probing_since = now
        return sorted(out, key=lambda w: w.name)

    def result(self, name: str, started: float, ok: bool, reason: str) -> Verdict | None:
        """Record a probe's result; the verdict when the jail's health changes."""
        w = self.watches.get(name)
        if w is None or w.started != started or w.probing_since is None:
            return None  # a probe of a run no longer watched
        now = self.clock()
        w.due = max(w.probing_since + w.check.interval_ms / 1000, now)
        w.probing_since = None
        before = w.state
        if ok:
            w.failures = 0
            w.state = Health.HEALTHY
            return Verdict(name, started, w.state, before, reason) if before != w.state else None
        w.failures += 1
        if w.failures < w.check.retries or before is Health.UNHEALTHY:
            return None
        w.state = Health.UNHEALTHY
        times = "probe" if w.failures == 1 else f"{w.failures} probes in a row"
        return Verdict(name, started, w.state, before, f"{times} failed; last: {reason}")

    def undo(self, verdict: Verdict) -> None:
        """The verdict could not be recorded now: the next result gives it again."""
        w = self.watches.get(verdict.name)
        if w is not None and w.started == verdict.started:
            w.state = verdict.previous

    def next_due(self) -> float | None:
        """Monotonic time of the next probe to start, if any is waiting."""
        waiting = [w.due for w in self.watches.values() if w.probing_since is None]
        return min(waiting) if waiting else None
