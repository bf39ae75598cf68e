"""Reading processes from /proc. A zombie counts as dead: on the test machines
PID 1 reaps orphans a second or more late (notes/linux-testbed.md §3)."""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path

PROC = Path("/proc")


@dataclass(frozen=True, slots=True)
class ProcStat:
    pid: int
    state: str
    ppid: int
    starttime: int


def parse_stat(text: str) -> ProcStat:
    """Parse /proc/PID/stat; the command name may hold spaces and parentheses."""
    head, _, rest = text.rpartition(")")
    pid = int(head.split("(", 1)[0])
    fields = rest.split()
    return ProcStat(pid=pid, state=fields[0], ppid=int(fields[1]), starttime=int(fields[19]))


def stat(pid: int) -> ProcStat | None:
    try:
        return parse_stat((PROC / str(pid) / "stat").read_text())
    except (OSError, ValueError, IndexError):
        return None


def alive(pid: int, starttime: int | None = None) -> bool:
    st = stat(pid)
    if st is None or st.state in ("Z", "X"):
        return False
    return starttime is None or st.starttime == starttime


def children(pid: int) -> list[int]:
    try:
        text = (PROC / str(pid) / "task" / str(pid) / "children").read_text()
    except OSError:
        return []
    return [int(p) for p in text.split()]


def root_of(pid: int) -> str | None:
    try:
        return os.readlink(PROC / str(pid) / "root")
    except OSError:
        return None


def reap(pid: int) -> None:
    """Collect ``pid`` if it is our child (it is, when this process started it)."""
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)
