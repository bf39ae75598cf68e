"""Running ``rex agent`` on a host: the one boot path and supervisor of its jails.

On every host the agent serves the local UNIX socket (agent/local.py), so that
``rex`` commands run in the warm agent rather than each in a process of its
own, and keeps this host's jails in their desired state (agent/jailsync.py:
started at boot in DEPENDS order, started again after their init died as
their RESTART policy says, stopped when ``rex stop`` wanted them stopped). It
runs their HEALTHCHECKs in a thread of its own (agent/health.py). On a host
that has joined a cluster it is also the cluster member (agent/cluster.py):
lease, watch, DNS of the whole cluster, routes, the mutual-TLS API. Without a
cluster it checks the jails every ``idle`` seconds, and at once when a health
verdict or a delayed restart is due.

On every host it also keeps the firewall's guard loaded (netpolicy/): at start
and on every tick, so that the rules follow the cluster's hosts and come back
if someone flushes them.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

from rexcarcer.agent.health import HealthChecks
from rexcarcer.agent.jailsync import JailSync
from rexcarcer.agent.local import LocalServer
from rexcarcer.config import Config
from rexcarcer.engine.base import Engine
from rexcarcer.errors import RexError
from rexcarcer.progress import Progress
from rexcarcer.service.api import JailService
from rexcarcer.service.connect import in_process
from rexcarcer.service.local import LocalService
from rexcarcer.state.records import list_jails
from rexcarcer.wiring import open_engine

log = logging.getLogger("rexcarcer.agent")


@dataclass(frozen=True, slots=True)
class Options:
    lease_ttl: int = 10
    idle: float = 5.0
    routes: bool = True
    api_port: int | None = 7443
    jails: bool = True
    skydns: bool = False


class LogProgress:
    """The agent's own work, in its log; a step is marked ``==>`` as the CLI
    marks it, so that the steps of a request (a remote `rex up`, a move) stand
    out from the agent's other lines."""

    def step(self, message: str) -> None:
        log.info("==> %s", message)

    def output(self, line: str) -> None:
        log.debug("| %s", line.rstrip("\n"))


def run(config: Config, options: Options, stop: threading.Event) -> None:
    engine = open_engine(config, LogProgress())
    wake = threading.Event()

    def service(progress: Progress) -> JailService:
        return in_process(config, progress)

    work = config.root / "run" / "contexts"
    server = LocalServer(config.agent_socket, engine.host.platform, service,
                         group=config.agent_group, work=work)  # fmt: skip
    server.start()
    checks = None
    if options.jails:
        checks = threading.Thread(target=_health, args=(config, stop, wake), name="health",
                                  daemon=True)  # fmt: skip
        checks.start()
    try:
        guard(engine)
        if config.etcd:
            _cluster(config, options, engine, stop)
        else:
            _single(config, options, engine, stop, wake)
    finally:
        stop.set()
        server.stop()
        if checks is not None:
            checks.join(timeout=10)
        engine.close()


def _health(config: Config, stop: threading.Event, wake: threading.Event) -> None:
    """The health checks, with an engine of their own (a store connection
    belongs to the thread that opened it)."""
    engine = open_engine(config, LogProgress())
    try:
        HealthChecks(engine, config.host, wake=wake.set).run(stop)
    finally:
        engine.close()


def guard(engine: Engine) -> None:
    """Load the guard, the published ports of the running jails and NAT (so an
    agent that restarts puts them back); a failure is logged and retried on the
    next tick."""
    from rexcarcer.netpolicy.hook import needs_forwarding

    try:
        if needs_forwarding(engine.host):
            engine.host.platform.enable_forwarding()
        engine.policy.guard(engine.host)
    except RexError as exc:
        log.warning("firewall: %s (%s)", exc, exc.hint or "retrying on the next tick")


def _cluster(config: Config, options: Options, engine: Engine, stop: threading.Event) -> None:
    from rexcarcer.agent.cluster import build
    from rexcarcer.state.etcd import EtcdStore

    assert isinstance(engine.host.store, EtcdStore)
    local = LocalService(lambda: open_engine(config, LogProgress()))
    agent = build(engine, local, engine.host.store, ttl=options.lease_ttl, idle=options.idle,
                  routes=options.routes, api_port=options.api_port, jails=options.jails,
                  skydns=options.skydns)  # fmt: skip
    agent.run(stop)


def _single(
    config: Config, options: Options, engine: Engine, stop: threading.Event, wake: threading.Event
) -> None:
    sync = JailSync(engine, config.host, rewire=True) if options.jails else None
    log.info("agent %s: single host; checking jails every %.1f s", config.host, options.idle)
    while not stop.is_set():
        guard(engine)
        wait = options.idle
        if sync is not None:
            try:
                sync.sync(list_jails(engine.host.store))
            except RexError as exc:
                log.warning("jails: %s", exc)
            due = sync.next_wake()
            if due is not None:
                wait = min(wait, max(0.0, due - time.monotonic()))
        _pause(wait, stop, wake)


def _pause(seconds: float, stop: threading.Event, wake: threading.Event) -> None:
    """Until ``seconds`` pass, the agent stops, or a health verdict wakes the jail
    sync (jails may wait for it: DEPENDS)."""
    deadline = time.monotonic() + seconds
    while not stop.is_set():
        left = deadline - time.monotonic()
        if left <= 0:
            return
        if wake.wait(min(left, 0.25)):
            wake.clear()
            return
