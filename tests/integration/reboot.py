"""A host reboot, as far as rex can tell, without rebooting the machine.

A reboot takes down at once everything rex runs and everything the kernel kept
for it in memory. ``simulate_reboot`` does that to one state directory:

1. SIGKILL, all at once, every process rex runs for it: the processes the
   caller started (the agent, ``rex host serve``), the jails' processes (every
   PID in the jails' cgroups ``rexcarcer/rex-<token>/*``, plus the waiter,
   unshare and init PIDs of ``$REX_ROOT/run/*.json``), unbound and its
   supervisor (``$REX_ROOT/unbound/serve.json``), the log collector
   (``$REX_ROOT/rsyslog/rsyslogd.pid``), and the descendants of all of them.
   They are first stopped (SIGSTOP), so none reacts to another's death (the
   agent restarting a jail, a waiter writing how its jail ended), then killed.
   Only processes found that way are signalled, each by PID and checked by its
   start time: nothing else on the machine.
2. Unmount what a reboot loses under the jails' datasets and ``$REX_ROOT``:
   every mount there that is not a ZFS dataset's own (the jails' volumes and
   devices are mounts of their private mount namespaces, gone with their
   processes; anything a host-side process left is removed here). The datasets'
   own mounts stay: zfs-fuse, the machine's one ZFS daemon, keeps them, and a
   real boot's pool import mounts every dataset with ``canmount=on`` again; one
   that is unmounted now is mounted, as that import would.
3. Delete rex's network namespaces (``rex-<token>-*``) and, when the caller
   names it, replace the host's own network namespace with a fresh one (only
   ``lo``, up): the bridge, its address, nftables, routes and ``ip_forward``
   are kernel memory a reboot loses. The test, as the OS's network
   configuration would, sets up the uplink again afterwards.
4. Remove the jails' cgroups (cgroupfs is memory too) and ``$REX_ROOT/run``
   (on a real host ``/run`` is a tmpfs); never the machine's ``/run``, which
   holds zfs-fuse's socket and pid file, nor anything else under it.
5. Write a new boot id into the file ``REX_BOOT_ID_FILE`` names (config.py:
   the test-only stand-in for /proc/sys/kernel/random/boot_id, which rex reads
   to tell "started at boot" from "restarted").

``unit_argv`` gives what the systemd units run at boot (contrib/systemd,
platform/linux.py): ``rex host serve`` (rexcarcer-jailer.service) and the
agent unit's ExecStart.

Used by tests/integration/test_faults_reboot.py and bench/bench_reboot.py.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shlex
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
AGENT_UNIT = REPO / "contrib" / "systemd" / "rexcarcer-agent.service"
CGROUP = Path("/sys/fs/cgroup")


@dataclass
class Rebooted:
    """What the simulated reboot did."""

    killed: list[int] = field(default_factory=list)
    unmounted: list[str] = field(default_factory=list)
    remounted: list[str] = field(default_factory=list)
    netns: list[str] = field(default_factory=list)
    cgroups: list[str] = field(default_factory=list)
    boot: str = ""


def token(root: Path) -> str:
    """The state directory's token in rex's names (platform/linux.py instance_token)."""
    return hashlib.sha256(str(root).encode()).hexdigest()[:6]


def new_boot(boot_file: Path) -> str:
    """A fresh boot id in ``boot_file`` (the host "booted")."""
    boot = str(uuid.uuid4())
    tmp = boot_file.with_name(f".{boot_file.name}.tmp")
    tmp.write_text(boot + "\n")
    tmp.rename(boot_file)
    return boot


def unit_argv(unit: Path = AGENT_UNIT) -> list[str]:
    """The arguments of a unit's ExecStart after the ``rex`` executable."""
    for line in unit.read_text().splitlines():
        if line.startswith("ExecStart="):
            argv = shlex.split(line.removeprefix("ExecStart="))
            assert Path(argv[0]).name == "rex", line
            return argv[1:]
    raise AssertionError(f"{unit}: no ExecStart")


# rexcarcer-jailer.service (platform/linux.py systemd_unit, dns/services.py serve_argv)
JAILER_ARGV = ["host", "serve"]


def _starttime(pid: int) -> int | None:
    """proc(5) /proc/PID/stat field 22; None when the process is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[19])


def _gone(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] in ("Z", "X")


def _children() -> dict[int, list[int]]:
    out: dict[int, list[int]] = {}
    for p in Path("/proc").iterdir():
        if not p.name.isdigit():
            continue
        try:
            ppid = int((p / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        out.setdefault(ppid, []).append(int(p.name))
    return out


def _cgroup_dirs(tok: str) -> list[Path]:
    """The jails' cgroup parents of this state directory, in every hierarchy."""
    return [d / "rexcarcer" / f"rex-{tok}" for d in sorted(CGROUP.iterdir())
            if (d / "rexcarcer" / f"rex-{tok}").is_dir()]  # fmt: skip


def _recorded(root: Path, tok: str) -> set[int]:
    """The PIDs rex recorded for this state directory (alive ones)."""
    pids: set[int] = set()
    for parent in _cgroup_dirs(tok):
        for procs in parent.glob("*/cgroup.procs"):
            pids.update(int(x) for x in procs.read_text().split())
    for run in (root / "run").glob("*.json"):
        try:
            info = json.loads(run.read_text())
        except (OSError, ValueError):
            continue
        if not isinstance(info, dict) or "init_pid" not in info:
            continue
        if _starttime(int(info["init_pid"])) == info.get("init_start"):
            pids.update(int(info[k]) for k in ("waiter_pid", "unshare_pid", "init_pid")
                        if isinstance(info.get(k), int))  # fmt: skip
    from rexcarcer.runtime.process import Proc

    try:
        serve = json.loads((root / "unbound" / "serve.json").read_text())
    except (OSError, ValueError):
        serve = {}
    for rec in serve.values():
        proc = Proc.from_json(rec)
        if proc.alive():
            pids.add(proc.pid)
    try:
        pid = int((root / "rsyslog" / "rsyslogd.pid").read_text().split()[0])
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        if str(root / "rsyslog" / "rsyslog.conf").encode() in cmdline:
            pids.add(pid)
    except (OSError, ValueError, IndexError):
        pass
    return pids


def _with_descendants(pids: set[int]) -> dict[int, int]:
    """``pids`` and every descendant, alive, each with its start time."""
    tree = _children()
    out: dict[int, int] = {}
    todo = list(pids)
    while todo:
        pid = todo.pop()
        start = _starttime(pid)
        if pid in out or start is None or pid in (1, os.getpid()):
            continue
        out[pid] = start
        todo.extend(tree.get(pid, []))
    return out


def _signal(procs: dict[int, int], sig: signal.Signals) -> None:
    for pid, start in procs.items():
        if _starttime(pid) == start:  # that same process, not a recycled PID
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)


def kill_everything(root: Path, started: Iterable[int]) -> list[int]:
    """SIGKILL, at once, what rex runs for ``root`` and what the caller started."""
    tok = token(root)
    frozen: dict[int, int] = {}
    for _ in range(5):  # until stopping them turns up nothing new
        found = _with_descendants({*started, *_recorded(root, tok)})
        new = {p: s for p, s in found.items() if p not in frozen}
        if not new:
            break
        _signal(new, signal.SIGSTOP)
        frozen.update(new)
    _signal(frozen, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while not all(_gone(p) for p in frozen):
        assert time.monotonic() < deadline, [p for p in frozen if not _gone(p)]
        time.sleep(0.02)
    return sorted(frozen)


def _mounts() -> list[tuple[str, str, str]]:
    """(source, mount point, fstype) of this mount namespace, /proc/self/mountinfo."""
    out = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        left, _, right = line.partition(" - ")
        point = left.split()[4].replace("\\040", " ")
        fstype, source = right.split()[:2]
        out.append((source, point, fstype))
    return out


def _zfs(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["zfs", *argv], capture_output=True, text=True, check=False)


def unmount_lost(root: Path, dataset: str) -> tuple[list[str], list[str]]:
    """Unmount what a reboot loses below the datasets and ``root``; mount the
    datasets a pool import would. (unmounted, mounted)."""
    mnt = _zfs("get", "-H", "-o", "value", "mountpoint", dataset).stdout.strip()
    below = [p for p in (mnt, str(root)) if p.startswith("/")]
    lost = [point for source, point, fstype in _mounts()
            if any(point == b or point.startswith(b + "/") for b in below)
            and not (fstype.startswith("fuse.zfs") or fstype == "zfs")]  # fmt: skip
    for point in sorted(lost, key=len, reverse=True):
        subprocess.run(["umount", "-l", point], capture_output=True, check=False)
    rows = _zfs("list", "-H", "-o", "name,canmount,mounted,mountpoint", "-t", "filesystem", "-r",
                dataset).stdout.splitlines()  # fmt: skip
    mounted = []
    for row in rows:
        name, canmount, is_mounted, point = row.split("\t")
        if canmount == "on" and is_mounted == "no" and point.startswith("/"):
            _zfs("mount", name)
            mounted.append(name)
    return lost, mounted


def drop_network(tok: str, host_netns: str | None) -> list[str]:
    """Delete rex's network namespaces; give the host a fresh one."""
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    gone = [ln.split()[0] for ln in listed.splitlines() if ln.startswith(f"rex-{tok}-")]
    for name in gone:
        subprocess.run(["ip", "netns", "del", name], capture_output=True, check=False)
    if host_netns:
        subprocess.run(["ip", "netns", "del", host_netns], capture_output=True, check=True)
        subprocess.run(["ip", "netns", "add", host_netns], capture_output=True, check=True)
        subprocess.run(["ip", "-n", host_netns, "link", "set", "lo", "up"], check=True)
    return gone


def drop_cgroups(tok: str) -> list[str]:
    removed = []
    for parent in _cgroup_dirs(tok):
        for d in sorted((p for p in parent.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
            _rmdir(d)
            removed.append(str(d))
        _rmdir(parent)
        removed.append(str(parent))
    return removed


def _rmdir(d: Path) -> None:
    deadline = time.monotonic() + 10
    while True:  # a killed process leaves its cgroup a moment after it is gone
        try:
            d.rmdir()
            return
        except FileNotFoundError:
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.02)


def simulate_reboot(
    root: Path, dataset: str, *, started: Iterable[int], boot_file: Path,
    host_netns: str | None,
) -> Rebooted:  # fmt: skip
    """Everything rex runs for ``root`` killed, and what a reboot loses removed
    (the module's docstring); ``started``: PIDs the caller started for it."""
    tok = token(root)
    out = Rebooted()
    out.killed = kill_everything(root, started)
    out.unmounted, out.remounted = unmount_lost(root, dataset)
    out.netns = drop_network(tok, host_netns)
    out.cgroups = drop_cgroups(tok)
    shutil.rmtree(root / "run", ignore_errors=True)
    out.boot = new_boot(boot_file)
    return out
