"""LIMIT on Linux, enforced by the real kernel: cgroups made by ``CgroupDriver``,
joined by processes started through ``SubprocessRunner`` in a new pid namespace
(``unshare --fork --pid --kill-child``, as the Linux runtime starts a jail).

Every group is ``rexcarcer/<TOKEN>-<hex>`` (the session token): each test's
fixture removes its groups, killing what is left, even when the test failed,
and the module's teardown sweeps this session's names and removes the
``rexcarcer`` parents it made. No other cgroup is touched.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from rexcarcer.errors import CommandFailed
from rexcarcer.limits import LimitError, Limits
from rexcarcer.limits.cgroup import CgroupDriver, parse_keyed, rlimits_for
from rexcarcer.run import SubprocessRunner
from rexcarcer.runtime import procfs
from tests.capability import linux_only
from tests.integration.conftest import TOKEN, require


@pytest.fixture(autouse=True)
def _linux_only() -> None:
    linux_only("cgroups and rlimits of the Linux runtime (rctl is unit-tested)")


RUNNER = SubprocessRunner()
PY = sys.executable


def in_pidns(*argv: str) -> list[str]:
    return ["unshare", "--fork", "--pid", "--kill-child", *argv]


@pytest.fixture(scope="module")
def cgroups() -> Iterator[CgroupDriver]:
    require("root", "namespaces")
    driver = CgroupDriver()
    missing = [c for c in ("memory", "cpu", "pids") if driver.placement(c) is None]
    if missing:
        msg = f"missing cgroup controllers: {missing}; found {driver.describe()}"
        missing(msg)
    parents = {d.parent for d in driver.group_dirs(f"{TOKEN}-probe")}
    made_parents = {p for p in parents if not p.exists()}
    yield driver
    for parent in parents:  # this session's leftovers, by name
        for child in parent.iterdir() if parent.is_dir() else ():
            if child.is_dir() and child.name.startswith(f"{TOKEN}-"):
                driver.remove(child.name, kill=True)
    for parent in made_parents:
        with contextlib.suppress(OSError):  # another user of rexcarcer/ keeps it
            parent.rmdir()


@pytest.fixture
def jail(cgroups: CgroupDriver) -> Iterator[str]:
    name = f"{TOKEN}-{uuid.uuid4().hex[:6]}"
    yield name
    cgroups.remove(name, kill=True)
    assert [d for d in cgroups.group_dirs(name) if d.exists()] == []


def _dir_of(cgroups: CgroupDriver, jail: str, controller: str) -> Path:
    p = cgroups.placement(controller)
    assert p is not None
    return p.mount / "rexcarcer" / jail


def _wait(predicate: object, timeout: float = 15.0) -> bool:
    assert callable(predicate)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return False


def test_this_machine_layout(cgroups: CgroupDriver) -> None:
    print(f"cgroup layout: {cgroups.layout()}: {cgroups.describe()}")
    assert {"memory", "cpu", "pids"} <= set(cgroups.describe())


def test_limits_read_back_from_the_kernel(cgroups: CgroupDriver, jail: str) -> None:
    procs = cgroups.create(jail, Limits(memory=64 << 20, cpu=0.5, pids=20))
    assert all(p.exists() for p in procs)
    mem, cpu, pids = (_dir_of(cgroups, jail, c) for c in ("memory", "cpu", "pids"))
    if (mem / "memory.limit_in_bytes").exists():  # v1
        assert (mem / "memory.limit_in_bytes").read_text().strip() == str(64 << 20)
        if (mem / "memory.memsw.limit_in_bytes").exists():
            assert (mem / "memory.memsw.limit_in_bytes").read_text().strip() == str(64 << 20)
        assert "oom_kill_disable 0" in (mem / "memory.oom_control").read_text()
        assert (cpu / "cpu.cfs_quota_us").read_text().strip() == "50000"
    else:
        assert (mem / "memory.max").read_text().strip() == str(64 << 20)
        assert (cpu / "cpu.max").read_text().strip() == "50000 100000"
    assert (pids / "pids.max").read_text().strip() == "20"
    # raise to "no limit" and lower again: the memsw ordering holds on the kernel
    cgroups.create(jail, Limits())
    assert (pids / "pids.max").read_text().strip() == "max"
    cgroups.create(jail, Limits(memory=32 << 20))
    if (mem / "memory.limit_in_bytes").exists():
        assert (mem / "memory.limit_in_bytes").read_text().strip() == str(32 << 20)


def test_memory_limit_oom_kills_inside_the_jail_only(cgroups: CgroupDriver, jail: str) -> None:
    procs = cgroups.create(jail, Limits(memory=32 << 20))
    before = Path("/proc/self/cgroup").read_text()
    # bytes * n writes every byte: 200 MiB truly allocated, not lazily mapped
    hog = "b = b'x' * (200 << 20); print('survived')"
    # A shell as the namespace's init reports how the hog ended: unshare itself
    # cannot pass on a SIGKILL (util-linux 2.38 says "sigprocmask unblock
    # failed: Invalid argument" and exits 1, as signal(SIGKILL, SIG_DFL) fails).
    report = '"$0" -c "$1"; echo "status=$?"'
    done = RUNNER.run(in_pidns("/bin/sh", "-c", report, PY, hog), cgroups=procs, timeout=120)
    use = cgroups.usage(jail)
    assert f"status={128 + signal.SIGKILL}" in done.stdout, (done.stdout, done.stderr)
    assert "survived" not in done.stdout
    assert use["oom_kills"] >= 1, use
    print(f"after the OOM kill: {use}")
    # this process stayed where it was, and the group still runs small things
    assert Path("/proc/self/cgroup").read_text() == before
    assert RUNNER.run(in_pidns(PY, "-c", "print(len(b'x' * (4 << 20)))"), cgroups=procs).ok


def test_pids_limit_stops_a_fork_bomb(cgroups: CgroupDriver, jail: str, tmp_path: Path) -> None:
    procs = cgroups.create(jail, Limits(pids=20))
    pids_dir = _dir_of(cgroups, jail, "pids")
    log = tmp_path / "bomb.log"
    # The inner shell forks 100 sleepers and dies at the first refused fork;
    # the outer one then execs sleep (no fork), keeping the namespace alive.
    bomb = (
        "i=0; while [ $i -lt 100 ]; do /bin/sleep 60 </dev/null >/dev/null 2>&1 & i=$((i+1)); done"
    )
    outer = '"$0" sh -c "$1"; exec "$0" sleep 60'
    upid = RUNNER.spawn(
        in_pidns("/bin/busybox", "sh", "-c", outer, "/bin/busybox", bomb),
        cgroups=procs,
        log_path=str(log),
    )
    try:
        seen: list[int] = []

        def settled() -> bool:
            seen.append(cgroups.usage(jail)["pids"])
            return "can't fork" in log.read_text(errors="replace")

        assert _wait(settled), log.read_text()
        assert "Resource temporarily unavailable" in log.read_text()
        assert max(seen) <= 20, seen
        events = (pids_dir / "pids.events").read_text().split()
        assert events[0] == "max" and int(events[1]) >= 1, events
        if (pids_dir / "pids.peak").exists():
            assert int((pids_dir / "pids.peak").read_text()) == 20  # it reached the limit
        members = [int(p) for p in (pids_dir / "cgroup.procs").read_text().split()]
        assert 15 <= len(members) <= 20
    finally:
        cgroups.remove(jail, kill=True)
        procfs.reap(upid)
    assert not any(procfs.alive(p) for p in members)
    assert not pids_dir.exists()


def test_openfiles_limit_refuses_the_17th_descriptor(cgroups: CgroupDriver, jail: str) -> None:
    limits = Limits(openfiles=16)
    procs = cgroups.create(jail, limits)
    script = (
        "import errno, os, resource\n"
        "print(*resource.getrlimit(resource.RLIMIT_NOFILE))\n"
        "fds = []\n"
        "try:\n"
        "    while True:\n"
        "        fds.append(os.open('/dev/null', os.O_RDONLY))\n"
        "except OSError as e:\n"
        "    print(errno.errorcode[e.errno], max(fds))\n"
    )
    done = RUNNER.run(in_pidns(PY, "-c", script), cgroups=procs, rlimits=rlimits_for(limits))
    # descriptors 0..15 are open (16 files), the 17th open(2) fails
    assert done.stdout.split() == ["16", "16", "EMFILE", "15"], done.stdout


def test_cpu_limit_throttles(cgroups: CgroupDriver, jail: str) -> None:
    procs = cgroups.create(jail, Limits(cpu=0.2))
    spin = "import time\nend = time.monotonic() + 1.0\nwhile time.monotonic() < end: pass\n"
    RUNNER.run(in_pidns(PY, "-c", spin), cgroups=procs, timeout=60)
    used = cgroups.usage(jail)["cpu_ns"]
    # 1 s of wall time at 0.2 core: about 0.2 s, plus start-up and one period
    assert 0 < used < 400_000_000, used
    stat = parse_keyed((_dir_of(cgroups, jail, "cpu") / "cpu.stat").read_text())
    assert stat["nr_throttled"] > 0, stat  # the quota, not a busy machine, held it back


def test_usage_reports_a_running_process(cgroups: CgroupDriver, jail: str) -> None:
    procs = cgroups.create(jail, Limits(memory=256 << 20))
    hold = "b = b'x' * (16 << 20); import time; print('ready', flush=True); time.sleep(60)"
    upid = RUNNER.spawn(in_pidns(PY, "-c", hold), cgroups=procs)
    try:
        assert _wait(lambda: cgroups.usage(jail)["memory"] >= 16 << 20), cgroups.usage(jail)
        use = cgroups.usage(jail)
        assert use["pids"] >= 2  # unshare and the python inside the namespace
        assert use["cpu_ns"] > 0
        print(f"usage of a running process: {use}")
    finally:
        cgroups.remove(jail, kill=True)
        procfs.reap(upid)


def test_remove_kills_only_on_request_and_leaves_nothing(cgroups: CgroupDriver, jail: str) -> None:
    procs = cgroups.create(jail, Limits(pids=10))
    upid = RUNNER.spawn(in_pidns("sleep", "60"), cgroups=procs)
    assert _wait(lambda: cgroups.usage(jail)["pids"] == 2)  # unshare + sleep
    members = {int(p) for p in procs[0].read_text().split()}
    with pytest.raises(LimitError, match="still hold processes") as err:
        cgroups.remove(jail)
    assert str(upid) in err.value.message
    assert cgroups.exists(jail) and all(procfs.alive(p) for p in members)
    cgroups.remove(jail, kill=True)
    procfs.reap(upid)
    assert not cgroups.exists(jail)
    assert [d for d in cgroups.group_dirs(jail) if d.exists()] == []
    assert not any(procfs.alive(p) for p in members)
    cgroups.remove(jail, kill=True)  # idempotent


def test_a_missing_group_fails_the_start(cgroups: CgroupDriver, jail: str, tmp_path: Path) -> None:
    procs = cgroups.create(jail, Limits(pids=10))
    cgroups.remove(jail)
    with pytest.raises(CommandFailed, match="could not start: join cgroup"):
        RUNNER.run(in_pidns("touch", str(tmp_path / "ran")), cgroups=procs)
    assert not (tmp_path / "ran").exists()
    assert os.path.exists(procs[0].parent.parent)  # the shared parent stays


def test_usage_held_open_follows_a_group_removed_and_made_again(
    cgroups: CgroupDriver, jail: str
) -> None:
    """The counters are read through descriptors held between listings
    (fsutil.HeldFiles): a removed group reads as gone, a new group of the same
    name as itself, never the old one's figures."""
    procs = cgroups.create(jail, Limits(pids=50))
    RUNNER.run(in_pidns(PY, "-c", "print(sum(range(3_000_000)))"), cgroups=procs)
    first = cgroups.usage(jail)
    assert first["cpu_ns"] > 0 and first["memory"] > 0 and first["pids"] == 0
    assert cgroups.usage(jail)["cpu_ns"] == first["cpu_ns"]  # read again, held
    cgroups.remove(jail)
    assert cgroups.usage(jail) == {}
    cgroups.create(jail, Limits(pids=50))
    again = cgroups.usage(jail)
    assert again["cpu_ns"] < first["cpu_ns"] and again["pids"] == 0, (first, again)
