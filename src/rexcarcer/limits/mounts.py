"""Where the cgroup controllers are mounted: /proc/self/mountinfo, parsed. Pure.

A line of mountinfo (proc(5), "/proc/pid/mountinfo")::

    35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
    (1)(2) (3) (4)  (5)                 (6)        (7)(8)   (9)    (10)

(5) is the mount point with space, tab, newline and backslash escaped as octal
``\\040`` etc.; (7) is a variable number of optional fields ended by ``-``; (8)
the file system type; (10) the super options. A cgroup v1 hierarchy names its
controllers in the super options (``rw,cpu,cpuacct``); a cgroup2 mount lists
them in its ``cgroup.controllers`` file instead, which the driver reads.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import PurePosixPath

# The controllers the limits use (cpuacct only for CPU time on v1).
WANTED = ("memory", "cpu", "cpuacct", "pids")
# Every v1 controller name the kernel knows (Documentation/admin-guide/cgroup-v1);
# other super options (rw, relatime, clone_children, name=systemd, ...) are not.
V1_CONTROLLERS = frozenset(
    {"cpuset", "cpu", "cpuacct", "blkio", "io", "memory", "devices", "freezer", "net_cls",
     "net_prio", "perf_event", "hugetlb", "pids", "rdma", "misc"}
)  # fmt: skip

_ESCAPE = re.compile(r"\\([0-7]{3})")


@dataclass(frozen=True, slots=True)
class Mount:
    mount_point: PurePosixPath
    fstype: str
    root: str  # the mount's root inside its hierarchy ("/" unless bind-mounted)
    controllers: frozenset[str]  # v1 only; empty for cgroup2

    @property
    def is_v2(self) -> bool:
        return self.fstype == "cgroup2"


def _unescape(field: str) -> str:
    return _ESCAPE.sub(lambda m: chr(int(m.group(1), 8)), field)


def parse_mountinfo(text: str) -> list[Mount]:
    """The cgroup and cgroup2 mounts, in mount order; other lines are skipped."""
    out: list[Mount] = []
    for line in text.splitlines():
        # a quick look first: every jail is a mount (a ZFS dataset), so most lines
        # are not cgroups; " - " only ever separates the optional fields from the
        # type (mount points have their spaces escaped)
        if " - cgroup" not in line:
            continue
        fields = line.split(" ")
        try:
            sep = fields.index("-", 6)
            fstype, superopts = fields[sep + 1], fields[sep + 3]
            root, point = _unescape(fields[3]), _unescape(fields[4])
        except (ValueError, IndexError):
            continue  # not a mountinfo line: nothing to learn from it
        if fstype == "cgroup":
            ctrls = frozenset(o for o in superopts.split(",") if o in V1_CONTROLLERS)
            out.append(Mount(PurePosixPath(point), fstype, root, ctrls))
        elif fstype == "cgroup2":
            out.append(Mount(PurePosixPath(point), fstype, root, frozenset()))
    return out


def _under(path: PurePosixPath, root: PurePosixPath) -> bool:
    return path == root or root in path.parents


def v1_mounts(mounts: list[Mount], root: PurePosixPath) -> dict[str, PurePosixPath]:
    """Wanted controller -> the mount point of its v1 hierarchy under ``root``.

    A hierarchy mounted twice (a bind mount) counts once: the first mount wins."""
    out: dict[str, PurePosixPath] = {}
    for m in mounts:
        if m.is_v2 or not _under(m.mount_point, root):
            continue
        for c in sorted(m.controllers & set(WANTED)):
            out.setdefault(c, m.mount_point)
    return out


def v2_mount(mounts: list[Mount], root: PurePosixPath) -> PurePosixPath | None:
    """The cgroup2 mount under ``root``: ``root`` itself (pure v2) first, then
    one below it (hybrid: ``root/unified``)."""
    points = [m.mount_point for m in mounts if m.is_v2 and _under(m.mount_point, root)]
    if root in points:
        return root
    return points[0] if points else None
