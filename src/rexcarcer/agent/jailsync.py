"""The agent's jail side: this host's jails in the state the cluster wants.

Every jail record names its host and its desired state (``rex up`` and ``rex
start`` want it running, ``rex stop`` wants it stopped). At every change and
every idle tick the agent compares that with the runtime and acts:

- running wanted, not running: start it (after a reboot, after its init died);
- stopped wanted, running: stop it.

A jail still being created (``status: creating``) is left to its ``rex up``.
Each action takes the jail's lifecycle lock without waiting (a ``rex`` command
working on the jail holds it: the agent looks again at the next tick) and
re-reads the record under it. A start that fails is retried with a growing
delay (5 s, 10 s, ... up to 5 minutes) and logged each time.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from rexcarcer.engine import jails
from rexcarcer.engine.base import Engine
from rexcarcer.errors import RexError
from rexcarcer.model.jail import JailRecord, Status
from rexcarcer.runtime.base import JailState

log = logging.getLogger("rexcarcer.agent")

FIRST_RETRY = 5.0
MAX_RETRY = 300.0


def mine(recs: Iterable[JailRecord], me: str) -> dict[str, JailRecord]:
    """This host's settled jail records (not being created), by name."""
    return {r.name: r for r in recs if r.host == me and r.status is not Status.CREATING}


@dataclass
class JailSync:
    engine: Engine
    me: str
    clock: Any = time.monotonic
    # name -> (failures so far, monotonic time of the next try)
    backoff: dict[str, tuple[int, float]] = field(default_factory=dict)

    def sync(self, current: Iterable[JailRecord]) -> list[tuple[str, str]]:
        """Act on every jail out of its desired state; the (jail, action) done."""
        recs = mine(current, self.me)
        for gone in set(self.backoff) - set(recs):
            del self.backoff[gone]
        if not recs:
            return []
        states = self.engine.host.runtime.status(sorted(recs))
        done = []
        for name, rec in sorted(recs.items()):
            running = states[name].state is JailState.RUNNING
            if rec.wants_running == running:
                self.backoff.pop(name, None)
                continue
            after = self.backoff.get(name, (0, 0.0))[1]
            if self.clock() < after:
                continue
            action = self._act(name)
            if action is not None:
                done.append((name, action))
        return done

    def _act(self, name: str) -> str | None:
        eng = self.engine
        with eng.host.try_lock(jails.lock_name(name)) as taken:
            if not taken:  # a rex command is working on it
                return None
            rec = jails.record(eng, name)  # the store, not the (older) view
            if rec is None or not mine([rec], self.me):
                return None
            if rec.wants_running == jails.is_running(eng, name):
                return None
            action = "start" if rec.wants_running else "stop"
            try:
                if action == "start":
                    jails.start_locked(eng, name)
                else:
                    jails.stop_locked(eng, name)
            except RexError as exc:
                failures = self.backoff.get(name, (0, 0.0))[0] + 1
                delay = min(MAX_RETRY, FIRST_RETRY * 2 ** (failures - 1))
                self.backoff[name] = (failures, self.clock() + delay)
                log.warning("jails: cannot %s %s (attempt %d; next in %.0f s): %s%s",
                            action, name, failures, delay, exc,
                            f"\n{exc.hint}" if exc.hint else "")  # fmt: skip
                return None
        self.backoff.pop(name, None)
        log.info("jails: %s %s (the cluster wants it %s)", "started" if action == "start"
                 else "stopped", name, "running" if action == "start" else "stopped")  # fmt: skip
        return action
