"""Linux: a jail's limits as cgroups, v2, v1 or hybrid, found from mountinfo.

Each jail gets ``<mount>/<prefix>/<jail>`` in every hierarchy that carries one
of the controllers we use (memory, cpu, pids; cpuacct for CPU time on v1);
the prefix is ``rexcarcer``, or ``rexcarcer/<instance>`` for the Linux runtime
(one per state directory, as its network namespaces are). The
runner's child writes its own PID into each group's ``cgroup.procs`` before it
execs (``Runner.run(..., cgroups=...)``), so every process of the jail starts
inside its groups and nothing runs unlimited, even for an instant.

Files written (kernel Documentation/admin-guide/cgroup-v2.rst and cgroup-v1/):

============  =========================================  ===============================
limit         v2                                         v1
============  =========================================  ===============================
memory        memory.max; memory.swap.max = 0            memory.limit_in_bytes and
                                                         memory.memsw.limit_in_bytes
                                                         (same value); memory.oom_control
                                                         = 0 (the OOM killer kills)
cpu           cpu.max = "QUOTA 100000"                   cpu.cfs_period_us = 100000,
                                                         cpu.cfs_quota_us = QUOTA
pids          pids.max                                   pids.max
============  =========================================  ===============================

A limit that is not set is written as "no limit" (``max`` / ``-1``), so calling
:meth:`CgroupDriver.create` again with other limits updates a group in place.
Swap counts against the memory limit (memsw / swap.max = 0): LIMIT memory
bounds what the jail takes from the host, not only its resident part.
``LIMIT openfiles`` is not a cgroup: it is ``RLIMIT_NOFILE``, set by the runner in
the child (:func:`rlimits_for`).
"""

from __future__ import annotations

import contextlib
import errno
import os
import resource
import select
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path, PurePosixPath

from rexcarcer.fsutil import held_files
from rexcarcer.limits.mounts import WANTED, Mount, parse_mountinfo, v1_mounts, v2_mount
from rexcarcer.names import jail_name_problem
from rexcarcer.rexfile.limits import LimitError, Limits

CGROUP_ROOT = Path("/sys/fs/cgroup")
PREFIX = "rexcarcer"
# The CFS bandwidth period (sched-bwc.rst): quota = cores * period.
PERIOD_US = 100_000
# v1 reads "no limit" back as this page-aligned LONG_MAX; any larger request is
# the same as none.
V1_UNLIMITED = (1 << 63) - 1
REMOVE_TIMEOUT = 10.0


class Version(StrEnum):
    V1 = "v1"
    V2 = "v2"


@dataclass(frozen=True, slots=True)
class Placement:
    """Where one controller lives: its hierarchy's version and mount point."""

    controller: str
    version: Version
    mount: Path


def rlimits_for(limits: Limits) -> dict[int, tuple[int, int]]:
    """The rlimits the runner sets in the jail's first process (inherited by all).

    Soft and hard alike: the jail cannot raise its own limit back."""
    if limits.openfiles is None:
        return {}
    return {resource.RLIMIT_NOFILE: (limits.openfiles, limits.openfiles)}


def parse_keyed(text: str) -> dict[str, int]:
    """``key value`` lines (memory.events, cpu.stat, memory.oom_control) -> ints."""
    out: dict[str, int] = {}
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        with contextlib.suppress(ValueError):
            out[key] = int(value)
    return out


def v1_memory_writes(current: int, memory: int | None, *, has_memsw: bool) -> list[tuple[str, str]]:
    """The v1 memory files to write, in order, to go from the ``current``
    memory.limit_in_bytes to ``memory`` (None: no limit).

    cgroup-v1/memory.rst: memsw.limit_in_bytes (memory + swap) may never be
    below limit_in_bytes, so raising writes memsw first and lowering writes it
    last. A group whose OOM killer is disabled pauses its processes at the
    limit instead of killing one (memory.rst, "OOM Control"), and a new group
    inherits that from its parent: oom_control is set to 0 explicitly."""
    value = _or(memory, "-1")
    new = V1_UNLIMITED if memory is None else memory
    out = [("memory.limit_in_bytes", value)]
    if has_memsw:
        memsw = ("memory.memsw.limit_in_bytes", value)
        out = [memsw, *out] if new >= current else [*out, memsw]
    return [*out, ("memory.oom_control", "0")]


def detect(root: Path, mounts: list[Mount]) -> list[Placement]:
    """Each wanted controller's placement: its v1 hierarchy when it has one
    (a controller bound to v1 is absent from v2), else the v2 mount when that
    lists it in ``cgroup.controllers``."""
    proot = PurePosixPath(root)
    v1 = v1_mounts(mounts, proot)
    v2 = v2_mount(mounts, proot)
    v2_controllers: set[str] = set()
    if v2 is not None:
        with contextlib.suppress(OSError):
            v2_controllers = set((Path(v2) / "cgroup.controllers").read_text().split())
    out: list[Placement] = []
    for c in WANTED:
        if c in v1:
            out.append(Placement(c, Version.V1, Path(v1[c])))
        elif v2 is not None and c in v2_controllers:
            out.append(Placement(c, Version.V2, Path(v2)))
    return out


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError as exc:
        raise LimitError(f"cannot read {path}: {exc.strerror}") from exc


def _write(path: Path, value: str) -> None:
    """One write(2), as the kernel wants for a cgroup file (O_TRUNC as a shell's
    ``>`` has it); no O_CREAT, so a missing control file is an error, not a new
    regular file."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_TRUNC)
        try:
            os.write(fd, value.encode())
        finally:
            os.close(fd)
    except OSError as exc:
        if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            hint = "cgroups are written as root, on a read-write /sys/fs/cgroup"
        elif exc.errno == errno.ENOENT:
            hint = "this kernel lacks that control file (see `rex doctor`)"
        else:
            hint = "the kernel refused the value; a lower memory limit than the jail uses now fails"
        raise LimitError(f"cannot write {value!r} to {path}: {exc.strerror}", hint=hint) from exc


class CgroupDriver:
    """Creates, fills, reads and removes the cgroups of jails."""

    def __init__(
        self,
        root: Path = CGROUP_ROOT,
        *,
        mountinfo: str | None = None,
        prefix: str = PREFIX,
        remove_timeout: float = REMOVE_TIMEOUT,
        read: Callable[[str], bytes] = held_files.read,
    ) -> None:
        """``read``: how the counters are read; the kernel's files are held open
        between listings (fsutil.HeldFiles), a tree of regular files (the unit
        tests') must be read afresh (``fsutil.read_small``)."""
        if mountinfo is None:
            mountinfo = own_mountinfo.text()
        for part in prefix.split("/"):  # "rexcarcer", or "rexcarcer/<instance>"
            if jail_name_problem(part) is not None:
                raise LimitError(f"bad cgroup prefix {prefix!r}: {jail_name_problem(part)}")
        self.root = root
        self.prefix = prefix
        self.remove_timeout = remove_timeout
        self.read = read
        self.mounts = parse_mountinfo(mountinfo)
        self.placements = detect(root, self.mounts)

    # -- layout ---------------------------------------------------------------

    def placement(self, controller: str) -> Placement | None:
        return next((p for p in self.placements if p.controller == controller), None)

    def layout(self) -> str:
        """``v2``, ``v1``, ``hybrid`` (v1 controllers beside a cgroup2 mount) or ``mixed``."""
        versions = {p.version for p in self.placements}
        if versions == {Version.V2}:
            return "v2"
        if versions == {Version.V1}:
            return "hybrid" if v2_mount(self.mounts, PurePosixPath(self.root)) else "v1"
        return "mixed" if versions else "none"

    def describe(self) -> dict[str, str]:
        return {p.controller: f"{p.version} {p.mount}" for p in self.placements}

    def _dir(self, p: Placement, jail: str) -> Path:
        return p.mount / self.prefix / _checked(jail)

    def _groups(self, jail: str) -> list[tuple[Path, Version, Path]]:
        """(group directory, version, mount), one per hierarchy: co-mounted v1
        controllers (cpu,cpuacct) and all of v2 share one directory."""
        out: list[tuple[Path, Version, Path]] = []
        for p in self.placements:
            d = self._dir(p, jail)
            if all(d != seen for seen, _, _ in out):
                out.append((d, p.version, p.mount))
        return out

    def group_dirs(self, jail: str) -> list[Path]:
        return [d for d, _, _ in self._groups(jail)]

    # -- the driver -----------------------------------------------------------

    def create(self, jail: str, limits: Limits) -> list[Path]:
        """Make (or update) the jail's groups, write its limits, and return the
        ``cgroup.procs`` files its first process must join."""
        self.require(limits)
        made: list[Path] = []
        try:
            for d, version, mount in self._groups(jail):
                if version is Version.V2:
                    self._enable_v2_controllers(mount, d)
                else:
                    level = mount
                    for part in d.parent.relative_to(mount).parts:
                        level = level / part
                        _mkdir(level)
                if _mkdir(d):
                    made.append(d)
            for p in self.placements:
                self._apply(p, self._dir(p, jail), limits)
        except BaseException:
            for d in reversed(made):  # a new group has no processes yet
                with contextlib.suppress(OSError):
                    d.rmdir()
            raise
        return [d / "cgroup.procs" for d in self.group_dirs(jail)]

    def require(self, limits: Limits) -> None:
        """Refuse limits whose controller this host has not mounted."""
        needs = {"memory": limits.memory, "cpu": limits.cpu, "pids": limits.pids}
        for controller, value in needs.items():
            if value is not None and self.placement(controller) is None:
                raise LimitError(
                    f"LIMIT {controller} needs the {controller} cgroup controller, "
                    "which this host has not mounted",
                    hint=f"mount it (cgroup v1) or enable it in cgroup v2 "
                    f"(cgroup.subtree_control); found: {self.describe() or 'no cgroups'}",
                )

    def _enable_v2_controllers(self, mount: Path, d: Path) -> None:
        """cgroup v2 hands a controller to a child only when the parent lists it
        in cgroup.subtree_control ("Top-down constraint", cgroup-v2.rst): enable
        ours on the mount's root and on ``rexcarcer``, making that on the way."""
        wanted = sorted(
            p.controller
            for p in self.placements
            if p.version is Version.V2 and p.controller != "cpuacct"
        )
        level = mount
        for part in d.relative_to(mount).parts[:-1]:
            _enable(level, wanted)
            level = level / part
            _mkdir(level)
        _enable(level, wanted)

    def _apply(self, p: Placement, d: Path, limits: Limits) -> None:
        if p.controller == "memory":
            if p.version is Version.V2:
                _write(d / "memory.max", _or(limits.memory, "max"))
                if (d / "memory.swap.max").exists():
                    _write(d / "memory.swap.max", "0" if limits.memory is not None else "max")
            else:
                self._v1_memory(d, limits.memory)
        elif p.controller == "cpu":
            quota = None if limits.cpu is None else max(1000, round(limits.cpu * PERIOD_US))
            if p.version is Version.V2:
                _write(d / "cpu.max", f"{_or(quota, 'max')} {PERIOD_US}")
            else:
                _write(d / "cpu.cfs_period_us", str(PERIOD_US))
                _write(d / "cpu.cfs_quota_us", _or(quota, "-1"))
        elif p.controller == "pids":
            _write(d / "pids.max", _or(limits.pids, "max"))

    def _v1_memory(self, d: Path, memory: int | None) -> None:
        try:
            current = int(_read(d / "memory.limit_in_bytes"))
        except ValueError:
            current = V1_UNLIMITED
        has_memsw = (d / "memory.memsw.limit_in_bytes").exists()
        for name, value in v1_memory_writes(current, memory, has_memsw=has_memsw):
            _write(d / name, value)

    def procs_files(self, jail: str) -> list[Path]:
        """The ``cgroup.procs`` files of the jail's groups ([] when it has none)."""
        dirs = self.group_dirs(jail)
        present = [d for d in dirs if d.is_dir()]
        if present and len(present) != len(dirs):
            missing = ", ".join(str(d) for d in dirs if d not in present)
            raise LimitError(
                f"the cgroups of jail {jail} are incomplete: {missing} is missing",
                hint=f"restart the jail so its cgroups are made again (rex restart {jail})",
            )
        return [d / "cgroup.procs" for d in present]

    def exists(self, jail: str) -> bool:
        return any(d.is_dir() for d in self.group_dirs(jail))

    def usage(self, jail: str) -> dict[str, int]:
        """What the jail uses now: ``memory`` (bytes), ``oom_kills``, ``pids``,
        ``cpu_ns``, and on v1 ``memory_failcnt``; only what this host accounts.

        ``rex ls`` reads this for every running jail: each file is one
        ``read`` of a string path (held open between listings, no ``stat``
        before it); a group that is gone (the jail stopped meanwhile) is
        skipped."""
        out: dict[str, int] = {}
        tail = f"/{self.prefix}/{_checked(jail)}/"
        for p in self.placements:
            d = f"{p.mount}{tail}"
            try:
                _usage_into(out, p, d, self.read)
            except FileNotFoundError as exc:
                if os.path.isdir(d):
                    raise LimitError(f"cannot read {exc.filename}: {exc.strerror}") from exc
            except OSError as exc:
                raise LimitError(f"cannot read {exc.filename}: {exc.strerror}") from exc
        return out

    def remove(self, jail: str, *, kill: bool = False) -> None:
        """Remove the jail's groups; idempotent. Processes still in them are an
        error, unless ``kill``: then they are killed (SIGKILL) first."""
        dirs = [d for d in self.group_dirs(jail) if d.is_dir()]
        if not dirs:
            return
        if not kill:
            pids = sorted({pid for d in dirs for pid in _members(d)})
            if pids:
                shown = " ".join(map(str, pids[:10])) + (" ..." if len(pids) > 10 else "")
                raise LimitError(
                    f"the cgroups of jail {jail} still hold processes: {shown}",
                    hint=f"stop the jail first (rex stop {jail})",
                )
        deadline = time.monotonic() + self.remove_timeout
        while True:
            if kill:
                for d in dirs:
                    _kill_members(d)
            dirs = [d for d in dirs if not _rmdir_tree(d)]
            if not dirs:
                return
            if time.monotonic() > deadline:
                left = sorted({pid for d in dirs for pid in _members(d)})
                raise LimitError(
                    f"cannot remove cgroups {', '.join(map(str, dirs))}"
                    + (f": processes {left} remain" if left else ""),
                    hint="they are busy; retry, or look for processes with `cat DIR/cgroup.procs`",
                )
            time.sleep(0.01)


def _usage_into(out: dict[str, int], p: Placement, d: str, read: Callable[[str], bytes]) -> None:
    """Add what group directory ``d`` of placement ``p`` accounts to ``out``
    (OSError as it comes: the caller tells a missing group from a failing read)."""

    def text(path: str) -> str:
        return read(path).decode()

    if p.controller == "memory" and p.version is Version.V2:
        out["memory"] = int(text(d + "memory.current"))
        out["oom_kills"] = parse_keyed(text(d + "memory.events")).get("oom_kill", 0)
    elif p.controller == "memory":
        out["memory"] = int(text(d + "memory.usage_in_bytes"))
        out["memory_failcnt"] = int(text(d + "memory.failcnt"))
        out["oom_kills"] = parse_keyed(text(d + "memory.oom_control")).get("oom_kill", 0)
    elif p.controller == "pids":
        out["pids"] = int(text(d + "pids.current"))
    elif p.controller == "cpuacct":
        out["cpu_ns"] = int(text(d + "cpuacct.usage"))
    if p.version is Version.V2 and "cpu_ns" not in out:
        # every v2 group has cpu.stat, with or without the cpu controller
        stat = parse_keyed(text(d + "cpu.stat"))
        if "usage_usec" in stat:
            out["cpu_ns"] = stat["usage_usec"] * 1000


class MountInfo:
    """This process's /proc/self/mountinfo, read again only after a mount or an
    unmount. Every jail is a mount (its dataset), so the file grows with the
    jails, and the agent makes a cgroup driver for every request. proc(5):
    after a change of the mounts, poll(2) marks a descriptor that read the
    file with POLLPRI (fs/proc_namespace.c mounts_poll, which also clears the
    mark): the text is read again from the start after any such mark."""

    def __init__(self, path: str = "/proc/self/mountinfo") -> None:
        self.path = path
        self._lock = threading.Lock()
        self._fd: int | None = None
        self._pid = 0
        self._text = ""

    def text(self) -> str:
        with self._lock:
            try:
                return self._current()
            except OSError as exc:
                self._drop()
                raise LimitError(f"cannot read {self.path}: {exc.strerror}") from exc

    def _current(self) -> str:
        if self._fd is None or self._pid != os.getpid():  # a forked child: its own
            self._drop()
            self._fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
            self._pid = os.getpid()
        else:
            poller = select.poll()
            poller.register(self._fd, select.POLLPRI | select.POLLERR)
            if not poller.poll(0):
                return self._text
        os.lseek(self._fd, 0, os.SEEK_SET)
        chunks = []
        while chunk := os.read(self._fd, 1 << 16):
            chunks.append(chunk)
        self._text = b"".join(chunks).decode("utf-8", "surrogateescape")
        return self._text

    def _drop(self) -> None:
        if self._fd is not None and self._pid == os.getpid():
            os.close(self._fd)
        self._fd, self._text = None, ""


own_mountinfo = MountInfo()


def _checked(jail: str) -> str:
    """A jail name is one DNS label before it becomes a path component."""
    problem = jail_name_problem(jail)
    if problem is not None:
        raise LimitError(f"bad jail name for a cgroup: {problem}")
    return jail


def _mkdir(d: Path) -> bool:
    """mkdir ``d``; True when this call made it."""
    try:
        d.mkdir()
    except FileExistsError:
        return False
    except OSError as exc:
        raise LimitError(
            f"cannot create cgroup {d}: {exc.strerror}", hint="cgroups are created as root"
        ) from exc
    return True


def _enable(group: Path, controllers: list[str]) -> None:
    have = set(_read(group / "cgroup.subtree_control").split())
    missing = [c for c in controllers if c not in have]
    if missing:
        _write(group / "cgroup.subtree_control", " ".join("+" + c for c in missing))


def _or(value: int | None, unlimited: str) -> str:
    return unlimited if value is None else str(value)


def _tree(d: Path) -> list[Path]:
    """``d`` and the groups a jail made below it, deepest first."""
    out: list[Path] = []
    for top, subdirs, _ in os.walk(d, topdown=False):
        out.extend(Path(top, s) for s in subdirs)
    out.append(d)
    return out


def _members(d: Path) -> set[int]:
    pids: set[int] = set()
    for g in _tree(d):
        with contextlib.suppress(OSError):
            pids.update(int(x) for x in (g / "cgroup.procs").read_text().split())
    return pids


def _kill_members(d: Path) -> None:
    """SIGKILL every process of ``d`` (and below), without a PID-reuse race.

    v2 has cgroup.kill (5.14+), which the kernel does atomically. Otherwise each
    PID is pinned with pidfd_open(2) first and signalled only if it is still
    listed afterwards: a listed PID whose pidfd is open is that process."""
    for g in _tree(d):
        kill_file = g / "cgroup.kill"
        if kill_file.exists():
            with contextlib.suppress(OSError):
                _write(kill_file, "1")
            continue
        pinned: dict[int, int] = {}
        try:
            for pid in _members_of(g):
                with contextlib.suppress(OSError):
                    pinned[pid] = os.pidfd_open(pid)
            still = _members_of(g)
            for pid, fd in pinned.items():
                if pid in still:
                    with contextlib.suppress(ProcessLookupError):
                        signal.pidfd_send_signal(fd, signal.SIGKILL)
        finally:
            for fd in pinned.values():
                os.close(fd)


def _members_of(g: Path) -> set[int]:
    try:
        return {int(x) for x in (g / "cgroup.procs").read_text().split()}
    except OSError:
        return set()


def _rmdir_tree(d: Path) -> bool:
    """rmdir ``d`` and its sub-groups; True once ``d`` is gone. A cgroup directory
    is removed with its control files in it: rmdir(2) is the whole protocol."""
    for g in _tree(d):
        try:
            g.rmdir()
        except FileNotFoundError:
            continue
        except OSError as exc:
            if exc.errno in (errno.EBUSY, errno.ENOTEMPTY):
                return False
            raise LimitError(f"cannot remove cgroup {g}: {exc.strerror}") from exc
    return True
