"""Running the log collector: configure, check, start, reload, keep alive, stop.

``rex host serve`` supervises it beside unbound (dns/serve.py); ``rex host
setup`` on Linux installs a unit that runs ``rex host serve``, and on FreeBSD
writes an rc.d script for rsyslogd from ports (``FREEBSD_RC``).

The collector is identified by its PID file *and* its command line (it must name
rex's rsyslog.conf), so a recycled PID or the host's own rsyslogd is never
signalled. Readiness is its UDP socket being bound, read from
``/proc/PID/net/udp`` (the sockets of the collector's own network namespace).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import time
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from rexcarcer.config import Config
from rexcarcer.errors import CommandFailed, NotSupported
from rexcarcer.fsutil import atomic_write
from rexcarcer.logs import LogsError
from rexcarcer.logs.collector import (
    CollectorPaths,
    CollectorSettings,
    check_argv,
    freebsd_rc_script,
    render_conf,
    render_table,
    rotate_script,
    run_argv,
    table_of,
)
from rexcarcer.model.jail import JailRecord
from rexcarcer.run import Runner
from rexcarcer.runtime import procfs
from rexcarcer.state.records import list_jails

if TYPE_CHECKING:
    from rexcarcer.host import Host

READY_TIMEOUT = 10.0
FREEBSD_RC = Path("/usr/local/etc/rc.d/rexcarcer_logs")


def paths_for(config: Config) -> CollectorPaths:
    return CollectorPaths.under(config.root)


def settings_for(host: Host) -> CollectorSettings:
    burst, interval = host.config.log_rate_limit
    return CollectorSettings(
        listen=host.config.host_address,
        freebind=host.platform.collector_freebind,
        max_size=host.config.log_max_size,
        rate_burst=burst,
        rate_interval=interval,
    )


def write_text(path: Path, text: str, mode: int = 0o644) -> bool:
    """Atomically replace ``path`` with ``text``; whether it changed."""
    try:
        return atomic_write(path, text, mode=mode, only_if_changed=True, make_parents=True)
    except OSError as exc:
        raise LogsError(f"cannot write {path}: {exc}") from exc


def write_table(
    paths: CollectorPaths, records: Iterable[JailRecord], *, without: str | None = None
) -> bool:
    return write_text(paths.table, render_table(table_of(records, without=without)))


def write_config(host: Host, records: Iterable[JailRecord]) -> bool:
    """rsyslog.conf, the lookup table and the directories; whether the config changed."""
    paths = paths_for(host.config)
    try:
        paths.work.mkdir(parents=True, exist_ok=True)
        paths.logs.mkdir(parents=True, exist_ok=True, mode=0o750)
    except OSError as exc:
        raise LogsError(f"cannot create {paths.work} or {paths.logs}: {exc}") from exc
    write_table(paths, records)
    settings = settings_for(host)
    if settings.max_size > 0:
        write_text(paths.rotate, rotate_script(paths, settings.max_size), mode=0o600)
    return write_text(paths.conf, render_conf(paths, settings))


def check(runner: Runner, paths: CollectorPaths) -> None:
    """``rsyslogd -N1``: refuse a configuration rsyslog would not load."""
    try:
        runner.run(check_argv(paths))
    except CommandFailed as exc:
        raise LogsError(
            f"rsyslogd rejects {paths.conf}: {exc.stderr or exc.message}", hint=f"see {paths.conf}"
        ) from exc
    except NotSupported as exc:
        raise LogsError(
            "rsyslogd is not installed: jail logs cannot be collected",
            hint="install rsyslog (Debian: apt-get install rsyslog; FreeBSD: pkg install rsyslog)",
        ) from exc


def available() -> bool:
    return shutil.which("rsyslogd") is not None


# -- the process ----------------------------------------------------------------


def collector_pid(paths: CollectorPaths) -> int | None:
    """The running collector's PID: the PID file's, alive, with rex's config."""
    try:
        pid = int(paths.pidfile.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    if not Path("/proc/self").exists():  # FreeBSD without procfs
        try:
            os.kill(pid, 0)
        except OSError:
            return None
        return pid
    if not procfs.alive(pid):
        return None
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return None
    return pid if os.fsencode(paths.conf) in argv else None


def reload(paths: CollectorPaths) -> bool:
    """SIGHUP: rsyslog re-reads the lookup table and reopens its files."""
    pid = collector_pid(paths)
    if pid is None:
        return False
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGHUP)
    return True


def parse_proc_net_udp(text: str) -> set[tuple[str, int]]:
    """The bound (address, port) pairs of /proc/net/udp or udp6 (hex, host order)."""
    import ipaddress

    out: set[tuple[str, int]] = set()
    for line in text.splitlines()[1:]:
        fields = line.split()
        if len(fields) < 2 or ":" not in fields[1]:
            continue
        hexaddr, hexport = fields[1].split(":")
        raw = bytes.fromhex(hexaddr)
        # the kernel prints each 32-bit word in host (little-endian) order
        words = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
        out.add((str(ipaddress.ip_address(words)), int(hexport, 16)))
    return out


def bound(pid: int, address: str, port: int) -> bool:
    found: set[tuple[str, int]] = set()
    for name in ("udp", "udp6"):
        with contextlib.suppress(OSError):
            found |= parse_proc_net_udp(Path(f"/proc/{pid}/net/{name}").read_text())
    return (address, port) in found


def start(host: Host) -> int:
    """Start rsyslogd in the foreground of a new session; return once it listens
    (Linux: its socket in /proc/PID/net; ``rex host serve`` is Linux-only)."""
    paths = paths_for(host.config)
    left = collector_pid(paths)
    if left is not None:
        terminate(left)  # left by a killed `rex host serve`
    paths.pidfile.unlink(missing_ok=True)
    pid = host.runner.spawn(run_argv(paths), log_path=str(paths.output))
    s = settings_for(host)
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        procfs.reap(pid)
        if not procfs.alive(pid):
            raise LogsError("rsyslogd exited during start", hint=_tail(paths.output))
        if bound(pid, str(s.listen), s.port):
            return pid
        time.sleep(0.005)
    terminate(pid)
    raise LogsError(
        f"rsyslogd did not listen on {s.listen}:{s.port} within {READY_TIMEOUT:.0f} s",
        hint=_tail(paths.output),
    )


def terminate(pid: int, timeout: float = 10.0) -> None:
    """SIGTERM, then SIGKILL; a zombie counts as gone."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + timeout
        while procfs.alive(pid) and time.monotonic() < deadline:
            procfs.reap(pid)
            time.sleep(0.01)
        if not procfs.alive(pid):
            procfs.reap(pid)
            return


def _tail(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()[-lines:]
    except OSError:
        return f"no output in {path}"
    return f"{path}:\n" + "\n".join(text)


def freebsd_setup(config: Config) -> list[tuple[str, ...]]:
    """Write the rc.d script; the commands that enable and (re)start it."""
    from rexcarcer.logs.collector import freebsd_steps

    write_text(FREEBSD_RC, freebsd_rc_script(paths_for(config)), mode=0o755)
    return freebsd_steps()


# -- under `rex host serve` ------------------------------------------------------------


class Collector:
    """The collector as one of the jailer services of ``rex host serve``: configured
    with the rest, started after unbound, restarted with a backoff when it exits,
    stopped with the supervisor. A host without rsyslogd serves DNS anyway and
    says that jail logs are not collected (``rex doctor`` reports it too)."""

    def __init__(self, host: Host) -> None:
        self.host = host
        self.paths = paths_for(host.config)
        self.pid: int | None = None
        self.wanted = False
        self.backoff = 1.0
        self.next_try = 0.0

    def prepare(self) -> bool:
        """Write and check the configuration; False when rsyslogd is not installed."""
        if not available():
            self.host.progress.step(
                "rsyslogd not found: jail logs are not collected (install rsyslog)"
            )
            return False
        changed = write_config(self.host, list_jails(self.host.store))
        check(self.host.runner, self.paths)
        self.host.progress.step(f"{'Wrote' if changed else 'Checked'} {self.paths.conf}")
        return True

    def start(self) -> None:
        self.wanted = self.prepare()
        if not self.wanted:
            return
        self.pid = start(self.host)
        self.host.progress.step(
            f"rsyslogd {self.pid} collects jail logs on "
            f"{self.host.config.host_address}:514 into {self.paths.logs}"
        )

    def begin(self) -> None:
        """Start it, or say why not and retry later: DNS is served either way."""
        try:
            self.start()
        except LogsError as exc:
            self._failed(exc)

    def keep_alive(self) -> None:
        """Call often: restarts an exited collector, waiting longer after each failure."""
        if not self.wanted or (self.pid is not None and procfs.alive(self.pid)):
            return
        if self.pid is not None:
            procfs.reap(self.pid)
            self.host.progress.step(f"rsyslogd {self.pid} exited; restarting it")
            self.pid = None
        if time.monotonic() < self.next_try:
            return
        try:
            self.start()
            self.backoff = 1.0
        except LogsError as exc:
            self._failed(exc)

    def _failed(self, exc: LogsError) -> None:
        self.wanted = True
        self.host.progress.step(
            f"the log collector failed to start (retrying in {self.backoff:.0f} s): {exc.message}"
        )
        self.next_try = time.monotonic() + self.backoff
        self.backoff = min(self.backoff * 2, 30.0)

    def stop(self) -> None:
        if self.pid is not None:
            terminate(self.pid)
            self.pid = None
        self.paths.pidfile.unlink(missing_ok=True)


def stop_left(config: Config) -> int | None:
    """Stop a collector a killed ``rex host serve`` left running; its PID."""
    paths = paths_for(config)
    pid = collector_pid(paths)
    if pid is not None:
        terminate(pid)
        paths.pidfile.unlink(missing_ok=True)
    return pid
