"""The agent's jail side: this host's jails in the state their records want.

Every jail record names its host and its desired state (``rex up`` and ``rex
start`` want it running, ``rex stop`` wants it stopped). At every change and
every idle tick the agent compares that with the runtime and acts, in DEPENDS
order (health/policy.py has the rules):

- stopped wanted, running: stop it;
- running wanted, not running since the host booted: start it (the boot path);
- running wanted, stopped on its own in this boot: its RESTART policy decides.
  Started again (at once, then with a growing delay if it keeps stopping), or
  left down: then what its start set up is taken down (DNS records withdrawn,
  network removed) and its health record says ``exited`` and why.

A jail starts only once the jails it DEPENDS on are ready (healthy, or running
when they have no HEALTHCHECK); until then it waits, and says once what for.
At boot, a jail that cannot start (it waits for DEPENDS, or its start fails)
has its DNS records, published ports and health record of the earlier boot
taken down, once, as for a jail left down: nothing answers for a jail that does
not run (``rex host serve`` serves the published names again as soon as
unbound starts). Its start puts them back.
A jail still being created (``status: creating``) is left to its ``rex up``;
one whose run is gone (killed, or it failed and ZFS could not roll it back) is
cleaned up as the next ``rex up`` would (engine/jails.py ``recover``).
A jail that moved away while this host still claims an address for it is what
a killed `rex move` left here: the agent removes it (engine/moving.py,
``finish_release``).
Each action takes the jail's lifecycle lock without waiting (a ``rex`` command
working on the jail holds it: the agent looks again at the next tick) and
re-reads the record under it. A start that fails is retried with a growing
delay (5 s, 10 s, ... up to 5 minutes) and logged each time.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from rexcarcer.engine import jails, lifecycle, moving
from rexcarcer.engine.base import Engine
from rexcarcer.errors import RexError
from rexcarcer.health import policy
from rexcarcer.model.depends import start_order
from rexcarcer.model.health import Health, HealthRecord
from rexcarcer.model.jail import JailRecord, Status
from rexcarcer.runtime.base import JailEnd, JailState, JailStatus
from rexcarcer.state.health import all_health, get_health, put_health

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
    clock: Callable[[], float] = time.monotonic
    wall: Callable[[], float] = time.time
    # name -> (failed starts so far, monotonic time of the next try)
    backoff: dict[str, tuple[int, float]] = field(default_factory=dict)
    # name -> monotonic time its restart is due (a jail that stopped on its own)
    due: dict[str, float] = field(default_factory=dict)
    # name -> stops in a row within policy.STABLE seconds of a start
    quick: dict[str, int] = field(default_factory=dict)
    # name -> what it waits for (logged when it changes)
    waiting: dict[str, str] = field(default_factory=dict)
    # jails not yet started in this boot whose earlier boot's records were taken down
    cleared: set[str] = field(default_factory=set)
    # choose the engine's hooks again at every pass: at boot the agent may come up
    # before unbound answers, and the jails it starts then must still be published
    rewire: bool = False

    def next_wake(self) -> float | None:
        """Monotonic time of the next delayed restart or retry still to come, if
        any (one already due that waits for its DEPENDS is woken by their health)."""
        now = self.clock()
        times = [t for t in (*self.due.values(), *(t for _, t in self.backoff.values())) if t > now]
        return min(times) if times else None

    def sync(self, current: Iterable[JailRecord]) -> list[tuple[str, str]]:
        """Act on every jail out of its desired state; the (jail, action) done."""
        everyone = {r.name: r for r in current}
        done = self._moved_away(everyone) + self._recover(everyone.values())
        recs = mine(everyone.values(), self.me)
        for memory in (self.backoff, self.due, self.quick, self.waiting):
            for gone in set(memory) - set(recs):
                del memory[gone]
        self.cleared &= set(recs)
        if not recs:
            return done
        eng = self.engine
        if self.rewire:
            from rexcarcer.wiring import default_hooks

            eng.hooks = default_hooks(eng.host.config)
        states = eng.host.runtime.status(sorted(recs))
        running = {n: s.state is JailState.RUNNING for n, s in states.items()}
        health = all_health(eng.host.store)
        boot = eng.host.platform.boot_id()
        for name in start_order({n: r.depends for n, r in recs.items()}):
            action = self._one(recs[name], states[name], everyone, health, running, boot)
            if action is not None:
                done.append((name, action))
                if action in ("start", "restart"):
                    running[name] = True
                    fresh = get_health(eng.host.store, name)
                    if fresh is not None:
                        health[name] = fresh
        return done

    def _recover(self, recs: Iterable[JailRecord]) -> list[tuple[str, str]]:
        """Remove what a failed or killed ``rex up``/``rex destroy`` of this host left
        (engine/jails.py ``recover``): a record still ``creating`` or ``updating``
        that no live run owns."""
        done = []
        for rec in recs:
            if rec.host != self.me or not jails.abandoned(self.engine, rec):
                continue
            try:
                if jails.recover(self.engine, rec.name):
                    log.info("jails: removed what an interrupted run left of %s", rec.name)
                    done.append((rec.name, "recovered"))
            except RexError as exc:
                log.warning("jails: cannot yet repair %s: %s%s", rec.name, exc,
                            f"\n{exc.hint}" if exc.hint else "")  # fmt: skip
        return done

    def _one(
        self,
        rec: JailRecord,
        st: JailStatus,
        everyone: dict[str, JailRecord],
        health: dict[str, HealthRecord],
        running: dict[str, bool],
        boot: str,
    ) -> str | None:
        name, is_running = rec.name, st.state is JailState.RUNNING
        if rec.wants_running == is_running:
            self.backoff.pop(name, None)
            self.due.pop(name, None)
            self.waiting.pop(name, None)
            if is_running:
                self.cleared.discard(name)
            return None
        if not rec.wants_running:
            return self._act(name, "stop", "the store wants it stopped")
        if name in self.backoff:  # a start that failed: retried on its own schedule
            if self.clock() < self.backoff[name][1]:
                return None
            return self._start(rec, everyone, health, running, boot, "start", "retrying")
        h = health.get(name)
        if not policy.ran_this_boot(h, boot):
            return self._start(rec, everyone, health, running, boot, "start",
                               "it has not run since the host booted")  # fmt: skip
        assert h is not None
        if h.state is Health.EXITED:
            return None  # stopped on its own earlier; its policy left it down
        end = st.ended or JailEnd(None)
        if name not in self.due:
            if not policy.restart_wanted(rec.restart, end):
                return self._settle(rec, end)
            self._schedule(rec, h, end)
        if self.clock() < self.due[name]:
            return None
        return self._start(rec, everyone, health, running, boot, "restart",
                           f"{end.describe()}; RESTART {rec.restart}")  # fmt: skip

    def _schedule(self, rec: JailRecord, h: HealthRecord, end: JailEnd) -> None:
        name = rec.name
        quick = self.wall() - h.started < policy.STABLE
        count = self.quick.get(name, 0) + 1 if quick else 1
        self.quick[name] = count
        delay = policy.restart_delay(count)
        self.due[name] = self.clock() + delay
        when = f"in {delay:.0f} s ({count} stops within {policy.STABLE:.0f} s of a start)" \
            if delay else "now"  # fmt: skip
        log.warning("jails: %s stopped on its own: %s; RESTART %s: starting it again %s",
                    name, end.describe(), rec.restart, when)  # fmt: skip

    def _start(
        self,
        rec: JailRecord,
        everyone: dict[str, JailRecord],
        health: dict[str, HealthRecord],
        running: dict[str, bool],
        boot: str,
        action: str,
        why: str,
    ) -> str | None:
        name = rec.name
        earlier = not policy.ran_this_boot(health.get(name), boot)
        blocked = policy.waiting_for(rec, everyone, health, running, boot)
        if blocked is not None:
            if self.waiting.get(name) != blocked:
                log.info("jails: %s waits for %s before it starts", name, blocked)
                self.waiting[name] = blocked
            if earlier:
                self._clear(name)
            return None
        self.waiting.pop(name, None)
        done = self._act(name, action, why)
        if done is None and earlier and name in self.backoff:  # its start failed
            self._clear(name)
        return done

    def _moved_away(self, everyone: dict[str, JailRecord]) -> list[tuple[str, str]]:
        """Finish the moves away from here whose run was killed after the jail
        changed hosts (moving.unfinished: this host still claims an address for a
        jail that runs elsewhere now)."""
        if not any(r.host not in (self.me, "") for r in everyone.values()):
            return []  # no jail of another host: nothing can have moved away
        done = []
        for name in moving.unfinished(self.engine.host.store, self.me):
            try:
                if moving.finish_release(self.engine, name):
                    log.info("jails: removed what a move of %s left here", name)
                    done.append((name, "released"))
            except RexError as exc:
                log.warning("jails: cannot remove what a move of %s left here: %s", name, exc)
        return done

    def _settle(self, rec: JailRecord, end: JailEnd) -> str | None:
        """A jail its policy leaves down: take down what its start set up."""
        eng, name = self.engine, rec.name
        with eng.host.try_lock(jails.lock_name(name)) as taken:
            if not taken:
                return None
            now = jails.record(eng, name)
            if now is None or not mine([now], self.me) or not now.wants_running:
                return None
            if jails.is_running(eng, name):
                return None
            lifecycle.stop_runtime(eng, now)  # DNS withdrawn, health record removed
            reason = f"{end.describe()}; RESTART {now.restart} leaves it stopped"
            t = self.wall()
            h = HealthRecord(name, Health.EXITED, eng.host.platform.boot_id(), t, t, reason)
            put_health(eng.host.store, h)
        log.warning("jails: %s stopped on its own: %s", name, reason)
        return "exited"

    def _clear(self, name: str) -> None:
        """Take down what the jail's start in an earlier boot set up (its DNS
        records, published ports, health record): it has not run since the
        host booted and cannot start now. Once; its start puts them back."""
        eng = self.engine
        if name in self.cleared:
            return
        with eng.host.try_lock(jails.lock_name(name)) as taken:
            if not taken:
                return
            now = jails.record(eng, name)
            if now is None or not mine([now], self.me) or not now.wants_running:
                return
            if jails.is_running(eng, name):
                return
            lifecycle.stop_runtime(eng, now)
        self.cleared.add(name)
        log.info("jails: %s has not run since the host booted and cannot start yet: "
                 "its DNS records and published ports are withdrawn until it starts",
                 name)  # fmt: skip

    def _act(self, name: str, action: str, why: str) -> str | None:
        eng = self.engine
        with eng.host.try_lock(jails.lock_name(name)) as taken:
            if not taken:  # a rex command is working on it
                return None
            rec = jails.record(eng, name)  # the store, not the (older) view
            if rec is None or not mine([rec], self.me):
                return None
            if rec.wants_running == jails.is_running(eng, name):
                return None
            verb = "stop" if action == "stop" else "start"
            if (verb == "start") != rec.wants_running:
                return None
            try:
                if verb == "start":
                    jails.start_locked(eng, name)
                else:
                    jails.stop_locked(eng, name)
            except RexError as exc:
                failures = self.backoff.get(name, (0, 0.0))[0] + 1
                delay = min(MAX_RETRY, FIRST_RETRY * 2 ** (failures - 1))
                self.backoff[name] = (failures, self.clock() + delay)
                self.due.pop(name, None)
                log.warning("jails: cannot %s %s (attempt %d; next in %.0f s): %s%s",
                            verb, name, failures, delay, exc,
                            f"\n{exc.hint}" if exc.hint else "")  # fmt: skip
                return None
            if action == "restart":
                h = get_health(eng.host.store, name)
                if h is not None:
                    put_health(eng.host.store, h.replace(restarts=h.restarts + 1))
        self.backoff.pop(name, None)
        self.due.pop(name, None)
        self.cleared.discard(name)
        if verb == "stop":
            log.info("jails: stopped %s (the store wants it stopped)", name)
        else:
            log.info("jails: started %s%s (%s)", name, " again" if action == "restart" else "",
                     why)  # fmt: skip
        return action
