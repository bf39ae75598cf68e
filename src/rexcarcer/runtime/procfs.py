"""Reading processes from /proc. A zombie counts as dead: on the test machines
PID 1 reaps orphans a second or more late (notes/linux-testbed.md §3)."""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path

from rexcarcer.fsutil import held_files

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
    """The process's stat line, or None when it is gone. Its command name is
    whatever the process set (prctl(2) PR_SET_NAME; in a jail, hostile): bytes
    that are not UTF-8 are kept as surrogates, never an error that would make a
    live process look dead. Held open for the next read (fsutil.HeldFiles:
    the file of a reaped process fails, even when its PID was reused)."""
    try:
        text = held_files.read(f"/proc/{pid}/stat").decode("utf-8", "surrogateescape")
        return parse_stat(text)
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


def parse_net_udp(text: str) -> set[tuple[str, int]]:
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


def net_udp(pid: int) -> set[tuple[str, int]] | None:
    """The UDP sockets bound in ``pid``'s own network namespace (Linux:
    /proc/PID/net/udp{,6}), or None where there is no such file."""
    found: set[tuple[str, int]] = set()
    seen = False
    for name in ("udp", "udp6"):
        try:
            found |= parse_net_udp((PROC / str(pid) / "net" / name).read_text())
            seen = True
        except OSError:
            continue
    return found if seen else None


def reap(pid: int) -> None:
    """Collect ``pid`` if it is our child (it is, when this process started it)."""
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)
