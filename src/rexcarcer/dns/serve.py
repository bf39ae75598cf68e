"""Running the jailer services: ``rex host setup`` (the OS's service manager) and
``rex host serve`` (unbound in the foreground, supervised by rex).

``rex host serve`` writes the configuration and the persisted records, starts
``unbound -d -p -c CONF`` through the runner, waits for its control socket,
makes it serve exactly the published set (plus the sentinel), and restarts it
with a backoff if it exits. SIGTERM or Ctrl-C stops unbound and then rex.
``--detach`` starts that same supervisor in the background and returns once DNS
answers; its PIDs (with their start times, so a recycled PID is never signalled)
are kept in ``Layout.state`` for ``--stop`` and for the next run, which stops an
unbound a killed supervisor left behind.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from rexcarcer.dns import DnsError
from rexcarcer.dns.hook import backend_for, publisher_for
from rexcarcer.dns.services import (
    Step,
    agent_steps,
    checkconf,
    serve_argv,
    setup_steps,
    systemd_running,
    write_configs,
)
from rexcarcer.dns.unbound import UnboundUnreachable, wait_ready
from rexcarcer.errors import Conflict
from rexcarcer.fsutil import atomic_write
from rexcarcer.logs.service import Collector, freebsd_setup, stop_left
from rexcarcer.platform.base import Flavour
from rexcarcer.platform.base import UnboundLayout as Layout
from rexcarcer.runtime import procfs

if TYPE_CHECKING:
    from rexcarcer.host import Host

READY_TIMEOUT = 15.0
MAX_BACKOFF = 30.0


def prepare(host: Host) -> tuple[Layout, bool]:
    """Write unbound's configuration and the persisted records; check them.
    Returns the layout and whether the configuration changed."""
    layout = host.platform.unbound_layout()
    changed = write_configs(host.config, layout)
    publisher = publisher_for(host)
    publisher.persist(publisher.published())
    if layout.flavour is Flavour.REX:
        checkconf(host.runner, layout)
    host.progress.step(f"{'Wrote' if changed else 'Checked'} {layout.server_conf}")
    return layout, changed


def setup(host: Host, *, start: bool, global_args: Sequence[str]) -> str:
    """``rex host setup``: configure, then start through the OS's service manager:
    unbound, the log collector and the agent (docs/agent.md)."""
    layout, changed = prepare(host)
    logs = Collector(host).prepare()  # systemd: `rex host serve` runs it too
    if not start:
        return f"configuration written to {layout.server_conf}; not started (--no-start)"
    steps = setup_steps(layout, host.runner, changed=changed, global_args=global_args,
                        systemd=systemd_running())  # fmt: skip
    if logs and layout.flavour is Flavour.LOCAL_UNBOUND:  # FreeBSD: rsyslogd's rc.d script
        steps += [Step(a, "start the jails' log collector") for a in freebsd_setup(host.config)]
    clock = host.platform.time_service()  # the time daemon, the third jailer service
    steps += [Step(s.argv, s.why) for s in clock.setup_steps()]
    steps += agent_steps(layout, host.runner)  # last: the agent needs the others
    for step in steps:
        host.progress.step(step.why)
        host.runner.run(step.argv)
    status = wait_ready(backend_for(host.config), timeout=READY_TIMEOUT)
    publisher_for(host).resync()
    time = clock.status()  # a daemon just started is not synchronised yet: reported, not waited for
    return (f"{status}: serving {host.config.zone} on {host.config.host_address}; the agent is "
            f"enabled and started; time: {time.detail}")  # fmt: skip


# -- the state file -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Proc:
    pid: int
    start: int

    @classmethod
    def of(cls, pid: int) -> Proc:
        st = procfs.stat(pid)
        return cls(pid, st.starttime if st else 0)

    def alive(self) -> bool:
        return procfs.alive(self.pid, self.start)


def read_state(layout: Layout) -> dict[str, Proc]:
    try:
        data = json.loads(layout.state.read_text())
        return {k: Proc(int(v["pid"]), int(v["start"])) for k, v in data.items()}
    except (OSError, ValueError, KeyError, TypeError):
        return {}


def _write_state(layout: Layout, procs: dict[str, Proc]) -> None:
    data = {k: {"pid": p.pid, "start": p.start} for k, p in procs.items()}
    atomic_write(layout.state, json.dumps(data), make_parents=True)


def terminate(proc: Proc, timeout: float = 10.0) -> None:
    """SIGTERM, then SIGKILL after ``timeout``; only this exact process."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        if not proc.alive():
            return
        try:
            os.kill(proc.pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + timeout
        while proc.alive() and time.monotonic() < deadline:
            procfs.reap(proc.pid)
            time.sleep(0.02)
    procfs.reap(proc.pid)


# -- rex host serve -------------------------------------------------------------------


def _claim(host: Host, layout: Layout) -> None:
    state = read_state(layout)
    sup = state.get("supervisor")
    if sup is not None and sup.alive() and sup.pid != os.getpid():
        raise Conflict(f"`rex host serve` is already running (pid {sup.pid})",
                       hint="stop it with `rex host serve --stop`")  # fmt: skip
    left = state.get("unbound")
    if left is not None and left.alive():
        host.progress.step(f"Stopping unbound {left.pid} left by an earlier `rex host serve`")
        terminate(left)
    try:
        status = backend_for(host.config).status()
    except UnboundUnreachable:
        _write_state(layout, {"supervisor": Proc.of(os.getpid())})
        return
    raise Conflict(f"another unbound already answers on {layout.control} ({status})",
                   hint="stop it, or let it be: `rex host setup` manages the OS's one")  # fmt: skip


def _start_unbound(host: Host, layout: Layout) -> Proc:
    argv = [layout.unbound, "-d", "-p", "-c", str(layout.conf)]
    layout.log.parent.mkdir(parents=True, exist_ok=True)
    proc = Proc.of(host.runner.spawn(argv, log_path=str(layout.log)))
    _write_state(layout, {"supervisor": Proc.of(os.getpid()), "unbound": proc})
    try:
        wait_ready(backend_for(host.config), timeout=READY_TIMEOUT, alive=proc.alive)
    except UnboundUnreachable as exc:
        terminate(proc)
        raise DnsError(f"unbound did not come up: {exc.message}", hint=_tail(layout)) from exc
    publisher = publisher_for(host)
    report = publisher.resync()
    count = len(publisher.union(publisher.published()))
    drift = "" if report.drift.empty else f" (repaired {len(report.drift.missing)} missing)"
    host.progress.step(f"unbound {proc.pid} serves {count} records on "
                       f"{host.config.host_address}:53{drift}")  # fmt: skip
    return proc


def serve(host: Host) -> None:
    """Run unbound until SIGTERM/SIGINT, restarting it when it exits on its own."""
    layout, _ = prepare(host)
    _claim(host, layout)
    logs = Collector(host)  # the jails' log collector, the other jailer service
    proc: Proc | None = None
    backoff = 1.0
    try:
        logs.begin()
        while True:
            proc = _start_unbound(host, layout)
            started = time.monotonic()
            while proc.alive():
                procfs.reap(proc.pid)
                logs.keep_alive()
                time.sleep(0.2)
            if time.monotonic() - started > 60:
                backoff = 1.0
            host.progress.step(f"unbound {proc.pid} exited; restarting in {backoff:.0f} s")
            time.sleep(backoff)
            backoff = min(backoff * 2, MAX_BACKOFF)
    finally:
        logs.stop()
        if proc is not None:
            terminate(proc)
            layout.control.unlink(missing_ok=True)  # unbound leaves it when not root
        if read_state(layout).get("supervisor") == Proc.of(os.getpid()):
            layout.state.unlink(missing_ok=True)


def _tail(layout: Layout, lines: int = 15) -> str:
    try:
        text = layout.log.read_text(errors="replace").splitlines()[-lines:]
    except OSError:
        return f"no output in {layout.log}"
    return f"{layout.log}:\n" + "\n".join(text)


def detach(host: Host, global_args: Sequence[str]) -> Proc:
    """Start ``rex host serve`` in the background; return once DNS answers."""
    layout = host.platform.unbound_layout()
    sup = read_state(layout).get("supervisor")
    if sup is not None and sup.alive():
        raise Conflict(f"`rex host serve` is already running (pid {sup.pid})",
                       hint="stop it with `rex host serve --stop`")  # fmt: skip
    log = layout.workdir / "serve.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    pid = host.runner.spawn(serve_argv(global_args), env=dict(os.environ), log_path=str(log))
    proc = Proc.of(pid)
    deadline = time.monotonic() + READY_TIMEOUT + 5
    while time.monotonic() < deadline:
        procfs.reap(pid)
        if not proc.alive():
            raise DnsError("`rex host serve` exited during start", hint=_log_tail(log))
        state = read_state(layout)
        if state.get("supervisor") == proc and "unbound" in state and _serving(host):
            return proc
        time.sleep(0.05)
    terminate(proc)
    raise DnsError("`rex host serve` did not start DNS in time", hint=_log_tail(log))


def _serving(host: Host) -> bool:
    from rexcarcer.dns.records import check_zone, sentinel

    try:
        return backend_for(host.config).has(sentinel(check_zone(host.config.zone)))
    except DnsError:
        return False


def _log_tail(path: os.PathLike[str] | str) -> str:
    try:
        with open(path, errors="replace") as f:
            return "serve.log:\n" + "".join(f.readlines()[-15:])
    except OSError:
        return "no output"


def stop(host: Host) -> list[int]:
    """Stop a detached ``rex host serve`` (and its unbound); the PIDs stopped."""
    layout = host.platform.unbound_layout()
    state = read_state(layout)
    stopped = []
    for key in ("supervisor", "unbound"):  # the supervisor stops unbound itself
        proc = state.get(key)
        if proc is not None and proc.alive():
            terminate(proc)
            stopped.append(proc.pid)
    layout.state.unlink(missing_ok=True)
    left = stop_left(host.config)  # a collector whose supervisor was killed
    return stopped if left is None else [*stopped, left]
