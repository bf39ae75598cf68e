"""Processes by PID and start time, through psutil, on every platform.

A PID alone is recycled; a PID plus its start time names one process for the
life of the system. psutil gives the start time without procfs, which a stock
FreeBSD does not mount (bsdinstall's fstab has no ``proc`` line; procfs(5) must
be mounted by hand): ``Process.create_time()`` is ``kinfo_proc.ki_start`` read
through ``sysctl kern.proc.pid.PID`` on FreeBSD (psutil ``_psutil_bsd.c``:
``PSUTIL_TV2DOUBLE(kp.ki_start)``) and boot time + ``/proc/PID/stat`` starttime
on Linux. A zombie counts as dead: on the Linux test machines PID 1 reaps
orphans late (DESIGN section 7), and a zombie runs nothing.

Records written by rex 0.1 hold the Linux ``/proc/PID/stat`` start time (clock
ticks after boot) instead; ``Proc.from_json`` and ``alive_since_boot`` still
read them, so an upgrade never mistakes a live owner for a dead one.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

# Two readings of one process's start time agree to the microsecond (FreeBSD's
# ki_start) or to the clock tick (Linux, 10 ms); two processes that share a PID
# are never started within a millisecond of each other.
SAME = 0.001


def start_time(pid: int) -> float | None:
    """When ``pid`` started (seconds since the epoch), or None when no such
    process runs (a zombie does not run)."""
    import psutil

    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return None
        return float(proc.create_time())
    except (psutil.NoSuchProcess, psutil.ZombieProcess, psutil.AccessDenied, ValueError):
        return None


def same(a: float, b: float) -> bool:
    return abs(a - b) < SAME


def alive(pid: int, start: float | None = None) -> bool:
    """Whether ``pid`` runs and, with ``start``, is the process that started then."""
    now = start_time(pid)
    return now is not None and (start is None or same(now, start))


def alive_since_boot(pid: int, ticks: int) -> bool:
    """Whether ``pid`` runs and started ``ticks`` clock ticks after boot (how
    rex 0.1 recorded a start time on Linux: proc(5) ``starttime``)."""
    import psutil

    now = start_time(pid)
    if now is None:
        return False
    hz = os.sysconf("SC_CLK_TCK")
    return bool(round((now - psutil.boot_time()) * hz) == ticks)


def process_alive(pid: int, start: float | None, ticks: int | None) -> bool:
    """``Platform.process_alive``: by start time, by a rex 0.1 record's ticks,
    or (neither known) by PID alone."""
    if start is None and ticks is not None:
        return alive_since_boot(pid, ticks)
    return alive(pid, start)


def cmdline(pid: int) -> list[str]:
    """The command line of ``pid`` (empty when it is gone or unreadable)."""
    import psutil

    try:
        return [str(a) for a in psutil.Process(pid).cmdline()]
    except (psutil.Error, OSError):
        return []


def udp_bound(pid: int) -> set[tuple[str, int]]:
    """The (address, port) pairs of the UDP sockets bound where ``pid`` is.

    On Linux: /proc/PID/net/udp{,6}, the sockets of the process's own network
    namespace (psutil reads the caller's namespace, and the collector may run
    in another, as in the tests). Without procfs (FreeBSD): psutil, which reads
    the process's descriptors from the kernel (sysctl)."""
    from rexcarcer.runtime import procfs

    own = procfs.net_udp(pid)
    if own is not None:
        return own
    import psutil

    try:
        proc = psutil.Process(pid)
        # psutil 6.0 renamed Process.connections to net_connections
        conns = getattr(proc, "net_connections", None) or proc.connections
        return {(c.laddr.ip, c.laddr.port) for c in conns(kind="udp") if c.laddr}
    except (psutil.Error, OSError):
        return set()


def reap(pid: int) -> None:
    """Collect ``pid`` if it is our child (it is, when this process started it)."""
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


@dataclass(frozen=True, slots=True)
class Proc:
    """One process: its PID and start time (``ticks``: a record of rex 0.1)."""

    pid: int
    start: float | None
    ticks: int | None = None

    @classmethod
    def of(cls, pid: int) -> Proc:
        return cls(pid, start_time(pid))

    def alive(self) -> bool:
        if self.start is None and self.ticks is not None:
            return alive_since_boot(self.pid, self.ticks)
        # a process whose start time could not be read when it was recorded had
        # ended by then (or never ran): it is not this one
        return self.start is not None and alive(self.pid, self.start)

    def same(self, other: Proc) -> bool:
        """The same process as ``other`` (both start times known and equal)."""
        return (
            self.pid == other.pid
            and self.start is not None
            and other.start is not None
            and same(self.start, other.start)
        )

    def as_json(self) -> dict[str, Any]:
        return {"pid": self.pid, "created": self.start}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Proc:
        """``{"pid", "created"}``; rex 0.1 wrote ``{"pid", "start"}`` in ticks."""
        pid = int(data["pid"])
        created = data.get("created")
        if isinstance(created, int | float) and not isinstance(created, bool):
            return cls(pid, float(created))
        legacy = data.get("start")
        if isinstance(legacy, int) and not isinstance(legacy, bool):
            return cls(pid, None, legacy)
        return cls(pid, None)
