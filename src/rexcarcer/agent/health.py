"""The agent's health checks: a thread that probes this host's running jails
that have a HEALTHCHECK and acts on the verdicts (docs/agent.md).

Every ``refresh`` seconds it reads which jails run with a check and since when
(their health records, written at each start by health/hook.py); the monitor
(health/monitor.py) says which probe is due; probes run in a small pool, so a
slow one never holds up the others. A verdict, taken under the jail's
lifecycle lock (a ``rex`` command working on the jail makes it wait for the next
probe), is recorded in ``health/<jail>``, logged with its reason, and published:
an unhealthy jail leaves its ``<svc>.svc`` A and SRV records (its own
``<jail>.jail`` name stays), a healthy one comes back. The jail sync is woken,
since jails may be waiting for this one (DEPENDS).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait

from rexcarcer.engine import jails
from rexcarcer.engine.base import Engine
from rexcarcer.errors import RexError
from rexcarcer.health.monitor import Monitor, Tracked, Verdict
from rexcarcer.health.probe import Result, probe
from rexcarcer.model.health import Health
from rexcarcer.model.jail import JailRecord, Status
from rexcarcer.runtime.base import JailState
from rexcarcer.state.health import all_health, get_health, put_health
from rexcarcer.state.records import list_jails

log = logging.getLogger("rexcarcer.agent")

REFRESH = 1.0  # seconds between reads of which jails run with a check
PROBES = 8  # probes at once


class HealthChecks:
    def __init__(
        self,
        engine: Engine,
        me: str,
        *,
        wake: Callable[[], None] = lambda: None,
        refresh: float = REFRESH,
        publish: Callable[[Engine, JailRecord], None] | None = None,
    ) -> None:
        self.engine = engine
        self.me = me
        self.wake = wake
        self.refresh = refresh
        self.publish = publish if publish is not None else publish_dns
        self.monitor = Monitor()
        self.records: dict[str, JailRecord] = {}
        self.pool = ThreadPoolExecutor(PROBES, thread_name_prefix="health-probe")
        self.probes: dict[Future[Result], tuple[str, float]] = {}

    # -- what to watch -------------------------------------------------------------------

    def track(self) -> None:
        """Watch this host's running jails that have a check."""
        host = self.engine.host
        recs = {r.name: r for r in list_jails(host.store)
                if r.host == self.me and r.status is Status.READY and r.wants_running
                and r.healthcheck is not None}  # fmt: skip
        states = host.runtime.status(sorted(recs)) if recs else {}
        health = all_health(host.store)
        boot = host.platform.boot_id()
        watched: dict[str, Tracked] = {}
        for name, rec in recs.items():
            h = health.get(name)
            if states[name].state is not JailState.RUNNING or h is None or h.boot != boot:
                continue
            assert rec.healthcheck is not None
            watched[name] = Tracked(rec.healthcheck, h.started, h.state)
        self.records = recs
        self.monitor.track(watched)

    # -- one round -----------------------------------------------------------------------

    def step(self, timeout: float) -> None:
        """Start the due probes, wait up to ``timeout`` for results, act on them."""
        for w in self.monitor.due():
            rec = self.records[w.name]
            fut = self.pool.submit(probe, self.engine.host.runtime, rec, w.check)
            self.probes[fut] = (w.name, w.started)
        if self.probes:
            done, _ = wait(list(self.probes), timeout=max(0.0, timeout),
                           return_when=FIRST_COMPLETED)  # fmt: skip
        else:
            done = set()
        for fut in done:
            name, started = self.probes.pop(fut)
            try:
                result = fut.result()
            except RexError as exc:  # a probe never raises on the jail's account
                result = Result(False, exc.message)
            verdict = self.monitor.result(name, started, result.ok, result.reason)
            if verdict is not None:
                self.record(verdict)

    def record(self, verdict: Verdict) -> bool:
        """Record and publish ``verdict``; False when it must wait (the jail busy
        or changed: the next probe gives it again, or a new run starts over)."""
        eng, name = self.engine, verdict.name
        with eng.host.try_lock(jails.lock_name(name)) as taken:
            if not taken:
                self.monitor.undo(verdict)
                return False
            rec = jails.record(eng, name)
            h = get_health(eng.host.store, name)
            if rec is None or h is None or not rec.wants_running:
                return False
            if h.started != verdict.started or not jails.is_running(eng, name):
                return False
            put_health(eng.host.store, h.replace(state=verdict.state, since=time.time(),
                                                 reason=verdict.reason))  # fmt: skip
            try:
                self.publish(eng, rec)
            except RexError as exc:
                log.warning("health: %s: cannot update DNS: %s", name, exc)
        how = log.warning if verdict.state is Health.UNHEALTHY else log.info
        how("health: %s is %s (was %s): %s", name, verdict.state, verdict.previous, verdict.reason)
        self.wake()
        return True

    def run(self, stop: threading.Event) -> None:
        last = float("-inf")
        try:
            while not stop.is_set():
                if time.monotonic() - last >= self.refresh:
                    try:
                        self.track()
                    except RexError as exc:
                        log.warning("health: %s", exc)
                    last = time.monotonic()
                due = self.monitor.next_due()
                until = min(due if due is not None else float("inf"), last + self.refresh)
                self.step(until - time.monotonic())
                if not self.probes:
                    stop.wait(max(0.0, until - time.monotonic()))
        finally:
            self.pool.shutdown(wait=False, cancel_futures=True)


def publish_dns(eng: Engine, rec: JailRecord) -> None:
    """Publish the jail again: the publisher puts it in or takes it out of its
    ``<svc>.svc`` records by its health (model/health.py ``in_service``)."""
    from rexcarcer.dns.hook import dns_enabled, publisher_for

    if rec.services and dns_enabled(eng.host.config):
        publisher_for(eng.host).publish(rec)
