"""The cgroup driver: mountinfo parsing on a real saved file, and the files it
writes and reads in a fake tree under tmp_path (v1/hybrid and v2).

A fake tree cannot be the kernel: mkdir in cgroupfs makes the control files,
here the test makes them first (``_kernel_group``). Real cgroups, processes,
OOM kills and rmdir are in tests/integration/test_limits.py.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path, PurePosixPath

import pytest

from rexcarcer.fsutil import read_small
from rexcarcer.limits import LimitError, Limits
from rexcarcer.limits.cgroup import (
    V1_UNLIMITED,
    CgroupDriver,
    MountInfo,
    Version,
    parse_keyed,
    rlimits_for,
    v1_memory_writes,
)
from rexcarcer.limits.mounts import parse_mountinfo, v1_mounts, v2_mount
from tests.capability import missing, require_tools

DATA = Path(__file__).resolve().parents[1] / "data" / "limits"
# /proc/self/mountinfo of a test machine (Debian 12, kernel 6.18), as saved:
# v1 controllers under /sys/fs/cgroup/<name>, cgroup2 at /sys/fs/cgroup/unified.
HYBRID = (DATA / "mountinfo-hybrid.txt").read_text()
SYS = PurePosixPath("/sys/fs/cgroup")

# Control files the kernel makes in a new group, with their initial contents.
V1_FILES = {
    "memory": {
        "memory.limit_in_bytes": "9223372036854771712\n",
        "memory.memsw.limit_in_bytes": "9223372036854771712\n",
        "memory.oom_control": "oom_kill_disable 0\nunder_oom 0\noom_kill 0\n",
        "memory.usage_in_bytes": "0\n",
        "memory.failcnt": "0\n",
    },
    "cpu": {"cpu.cfs_period_us": "100000\n", "cpu.cfs_quota_us": "-1\n"},
    "cpuacct": {"cpuacct.usage": "0\n"},
    "pids": {"pids.max": "max\n", "pids.current": "0\n"},
}
V2_FILES = {
    "memory.max": "max\n",
    "memory.swap.max": "max\n",
    "memory.current": "0\n",
    "memory.events": "low 0\nhigh 0\nmax 0\noom 0\noom_kill 0\noom_group_kill 0\n",
    "cpu.max": "max 100000\n",
    "cpu.stat": "usage_usec 0\nuser_usec 0\nsystem_usec 0\n",
    "pids.max": "max\n",
    "pids.current": "0\n",
    "cgroup.subtree_control": "",
}


def _kernel_group(d: Path, files: dict[str, str]) -> None:
    d.mkdir(parents=True, exist_ok=True)
    for name, text in {**files, "cgroup.procs": ""}.items():
        (d / name).write_text(text)


def _hybrid(tmp_path: Path) -> tuple[CgroupDriver, Path]:
    root = tmp_path / "cg"
    for name in ("cpu", "cpuacct", "cpuset", "memory", "pids", "systemd", "unified"):
        (root / name).mkdir(parents=True)
    (root / "unified" / "cgroup.controllers").write_text("hugetlb\n")
    mountinfo = HYBRID.replace(str(SYS), str(root))
    return CgroupDriver(root, mountinfo=mountinfo, read=read_small), root


def _v2(tmp_path: Path, controllers: str = "cpuset cpu io memory hugetlb pids rdma misc") -> Path:
    root = tmp_path / "cg"
    root.mkdir()
    (root / "cgroup.controllers").write_text(controllers + "\n")
    (root / "cgroup.subtree_control").write_text("")
    return root


V2_MOUNTINFO = (
    "35 24 0:30 / {root} rw,nosuid,nodev,noexec,relatime shared:9 - cgroup2 cgroup2 "
    "rw,nsdelegate,memory_recursiveprot\n"
)


# -- mountinfo -------------------------------------------------------------------


def test_saved_mountinfo_has_the_hybrid_layout() -> None:
    mounts = parse_mountinfo(HYBRID)
    kinds = {str(m.mount_point): (m.fstype, sorted(m.controllers)) for m in mounts}
    assert kinds == {
        "/sys/fs/cgroup/cpu": ("cgroup", ["cpu"]),
        "/sys/fs/cgroup/cpuacct": ("cgroup", ["cpuacct"]),
        "/sys/fs/cgroup/cpuset": ("cgroup", ["cpuset"]),
        "/sys/fs/cgroup/memory": ("cgroup", ["memory"]),
        "/sys/fs/cgroup/devices": ("cgroup", ["devices"]),
        "/sys/fs/cgroup/freezer": ("cgroup", ["freezer"]),
        "/sys/fs/cgroup/blkio": ("cgroup", ["blkio"]),
        "/sys/fs/cgroup/pids": ("cgroup", ["pids"]),
        "/sys/fs/cgroup/systemd": ("cgroup", []),  # name=systemd: no controller
        "/sys/fs/cgroup/unified": ("cgroup2", []),
    }
    assert v1_mounts(mounts, SYS) == {
        "memory": SYS / "memory",
        "cpu": SYS / "cpu",
        "cpuacct": SYS / "cpuacct",
        "pids": SYS / "pids",
    }
    assert v2_mount(mounts, SYS) == SYS / "unified"


def test_mountinfo_escapes_optional_fields_and_co_mounted_controllers() -> None:
    text = (
        r"30 25 0:26 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid shared:12 master:3 - cgroup cgroup "
        "rw,cpu,cpuacct\n"
        r"31 25 0:27 / /srv/my\040cgroups/pids rw - cgroup pids rw,pids,release_agent=/x"
        "\n"
        "not a mountinfo line\n"
        "32 25 0:28 / /mnt/elsewhere rw - cgroup cgroup rw,memory\n"
    )
    mounts = parse_mountinfo(text)
    assert [str(m.mount_point) for m in mounts] == [
        "/sys/fs/cgroup/cpu,cpuacct",
        "/srv/my cgroups/pids",
        "/mnt/elsewhere",
    ]
    assert mounts[0].controllers == {"cpu", "cpuacct"}
    assert mounts[1].controllers == {"pids"}
    # only hierarchies under the cgroup root count
    assert v1_mounts(mounts, SYS) == {"cpu": SYS / "cpu,cpuacct", "cpuacct": SYS / "cpu,cpuacct"}


def test_pure_v2_mount_is_the_root() -> None:
    mounts = parse_mountinfo(V2_MOUNTINFO.format(root="/sys/fs/cgroup"))
    assert v2_mount(mounts, SYS) == SYS
    assert v1_mounts(mounts, SYS) == {}


# -- layout ----------------------------------------------------------------------


def test_hybrid_layout_uses_the_v1_controllers(tmp_path: Path) -> None:
    driver, root = _hybrid(tmp_path)
    assert driver.layout() == "hybrid"
    assert driver.describe() == {
        "memory": f"v1 {root}/memory",
        "cpu": f"v1 {root}/cpu",
        "cpuacct": f"v1 {root}/cpuacct",
        "pids": f"v1 {root}/pids",
    }
    assert driver.group_dirs("web") == [root / c / "rexcarcer" / "web" for c in V1_FILES]


def test_v2_layout_takes_controllers_from_cgroup_controllers(tmp_path: Path) -> None:
    root = _v2(tmp_path)
    driver = CgroupDriver(root, mountinfo=V2_MOUNTINFO.format(root=root), read=read_small)
    assert driver.layout() == "v2"
    assert {p.controller: p.version for p in driver.placements} == {
        "memory": Version.V2,
        "cpu": Version.V2,
        "pids": Version.V2,
    }
    assert driver.group_dirs("web") == [root / "rexcarcer" / "web"]


def test_a_limit_without_its_controller_is_refused(tmp_path: Path) -> None:
    root = _v2(tmp_path, controllers="memory pids")
    driver = CgroupDriver(root, mountinfo=V2_MOUNTINFO.format(root=root), read=read_small)
    with pytest.raises(LimitError, match="LIMIT cpu needs the cpu cgroup controller") as err:
        driver.create("web", Limits(cpu=1.0))
    assert err.value.hint is not None and "memory" in err.value.hint
    assert not (root / "rexcarcer").exists()  # nothing made


@pytest.mark.parametrize("name", ["", "..", "../etc", "a/b", "Web", "x" * 64, "-a", "1234"])
def test_jail_names_are_checked_before_they_become_paths(tmp_path: Path, name: str) -> None:
    driver, _ = _hybrid(tmp_path)
    with pytest.raises(LimitError, match="bad jail name for a cgroup"):
        driver.create(name, Limits())
    with pytest.raises(LimitError):
        driver.remove(name, kill=True)


# -- writes ----------------------------------------------------------------------


def test_v1_create_writes_every_limit(tmp_path: Path) -> None:
    driver, root = _hybrid(tmp_path)
    for c, files in V1_FILES.items():
        _kernel_group(root / c / "rexcarcer" / "web", files)
    procs = driver.create("web", Limits(memory=512 << 20, cpu=0.5, pids=64, openfiles=16))
    assert procs == [root / c / "rexcarcer" / "web" / "cgroup.procs" for c in V1_FILES]
    mem = root / "memory" / "rexcarcer" / "web"
    assert (mem / "memory.limit_in_bytes").read_text() == str(512 << 20)
    assert (mem / "memory.memsw.limit_in_bytes").read_text() == str(512 << 20)
    assert (mem / "memory.oom_control").read_text() == "0"
    cpu = root / "cpu" / "rexcarcer" / "web"
    assert (cpu / "cpu.cfs_period_us").read_text() == "100000"
    assert (cpu / "cpu.cfs_quota_us").read_text() == "50000"
    assert (root / "pids" / "rexcarcer" / "web" / "pids.max").read_text() == "64"


def test_v1_create_without_limits_writes_no_limit(tmp_path: Path) -> None:
    driver, root = _hybrid(tmp_path)
    for c, files in V1_FILES.items():
        _kernel_group(root / c / "rexcarcer" / "web", files)
    driver.create("web", Limits())
    assert (root / "memory/rexcarcer/web/memory.limit_in_bytes").read_text() == "-1"
    assert (root / "cpu/rexcarcer/web/cpu.cfs_quota_us").read_text() == "-1"
    assert (root / "pids/rexcarcer/web/pids.max").read_text() == "max"


def test_v1_memsw_is_written_first_when_raising_and_last_when_lowering() -> None:
    lower = v1_memory_writes(V1_UNLIMITED, 32 << 20, has_memsw=True)
    assert lower == [
        ("memory.limit_in_bytes", str(32 << 20)),
        ("memory.memsw.limit_in_bytes", str(32 << 20)),
        ("memory.oom_control", "0"),
    ]
    raise_ = v1_memory_writes(32 << 20, 64 << 20, has_memsw=True)
    assert [name for name, _ in raise_][:2] == [
        "memory.memsw.limit_in_bytes",
        "memory.limit_in_bytes",
    ]
    unlimit = v1_memory_writes(32 << 20, None, has_memsw=True)
    assert unlimit[:2] == [("memory.memsw.limit_in_bytes", "-1"), ("memory.limit_in_bytes", "-1")]
    assert v1_memory_writes(V1_UNLIMITED, 32 << 20, has_memsw=False) == [
        ("memory.limit_in_bytes", str(32 << 20)),
        ("memory.oom_control", "0"),
    ]


def test_v2_create_enables_controllers_top_down_and_writes_limits(tmp_path: Path) -> None:
    root = _v2(tmp_path)
    (root / "cgroup.subtree_control").write_text("cpu\n")  # already delegated: kept
    _kernel_group(root / "rexcarcer", {"cgroup.subtree_control": ""})
    _kernel_group(root / "rexcarcer" / "web", V2_FILES)
    driver = CgroupDriver(root, mountinfo=V2_MOUNTINFO.format(root=root), read=read_small)
    procs = driver.create("web", Limits(memory=64 << 20, cpu=1.5, pids=20))
    assert procs == [root / "rexcarcer" / "web" / "cgroup.procs"]
    assert (root / "cgroup.subtree_control").read_text() == "+memory +pids"
    assert (root / "rexcarcer" / "cgroup.subtree_control").read_text() == "+cpu +memory +pids"
    web = root / "rexcarcer" / "web"
    assert (web / "memory.max").read_text() == str(64 << 20)
    assert (web / "memory.swap.max").read_text() == "0"
    assert (web / "cpu.max").read_text() == "150000 100000"
    assert (web / "pids.max").read_text() == "20"
    driver.create("web", Limits(pids=5))  # an update: the others go back to no limit
    assert [(web / f).read_text() for f in ("memory.max", "memory.swap.max", "cpu.max")] == [
        "max",
        "max",
        "max 100000",
    ]


def test_a_missing_control_file_is_a_clear_error(tmp_path: Path) -> None:
    driver, root = _hybrid(tmp_path)
    for c, files in V1_FILES.items():
        _kernel_group(root / c / "rexcarcer" / "web", files)
    (root / "pids/rexcarcer/web/pids.max").unlink()
    with pytest.raises(LimitError, match=r"cannot write '20' to .*pids\.max: No such file") as err:
        driver.create("web", Limits(pids=20))
    assert err.value.hint is not None and "control file" in err.value.hint


# -- reading and removing ------------------------------------------------------


def test_usage_v1(tmp_path: Path) -> None:
    driver, root = _hybrid(tmp_path)
    assert driver.usage("web") == {}
    assert not driver.exists("web")
    assert driver.procs_files("web") == []
    for c, files in V1_FILES.items():
        _kernel_group(root / c / "rexcarcer" / "web", files)
    (root / "memory/rexcarcer/web/memory.usage_in_bytes").write_text("33546240\n")
    (root / "memory/rexcarcer/web/memory.oom_control").write_text(
        "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n"
    )
    (root / "pids/rexcarcer/web/pids.current").write_text("3\n")
    (root / "cpuacct/rexcarcer/web/cpuacct.usage").write_text("123456789\n")
    assert driver.usage("web") == {
        "memory": 33546240,
        "memory_failcnt": 0,
        "oom_kills": 2,
        "pids": 3,
        "cpu_ns": 123456789,
    }
    assert driver.exists("web")


def test_usage_skips_a_removed_group_and_refuses_a_missing_file(tmp_path: Path) -> None:
    driver, root = _hybrid(tmp_path)
    for c, files in V1_FILES.items():
        _kernel_group(root / c / "rexcarcer" / "web", files)
    (root / "pids/rexcarcer/web/pids.current").unlink()
    (root / "pids/rexcarcer/web/pids.max").unlink()
    (root / "pids/rexcarcer/web/cgroup.procs").unlink()
    (root / "pids/rexcarcer/web").rmdir()  # the jail stopped while it was read
    assert driver.usage("web") == {"memory": 0, "memory_failcnt": 0, "oom_kills": 0, "cpu_ns": 0}
    # a group that is there without its file is the kernel's surprise, not a stop
    (root / "cpuacct/rexcarcer/web/cpuacct.usage").unlink()
    with pytest.raises(LimitError, match=r"cannot read .*cpuacct\.usage: No such file"):
        driver.usage("web")


def test_usage_v2(tmp_path: Path) -> None:
    root = _v2(tmp_path)
    web = root / "rexcarcer" / "web"
    _kernel_group(web, V2_FILES)
    (web / "memory.current").write_text("8388608\n")
    (web / "memory.events").write_text("low 0\nhigh 0\nmax 4\noom 1\noom_kill 1\n")
    (web / "pids.current").write_text("2\n")
    (web / "cpu.stat").write_text("usage_usec 1500\nuser_usec 1000\nsystem_usec 500\n")
    driver = CgroupDriver(root, mountinfo=V2_MOUNTINFO.format(root=root), read=read_small)
    assert driver.usage("web") == {"memory": 8388608, "oom_kills": 1, "pids": 2, "cpu_ns": 1500000}


def test_incomplete_groups_are_reported(tmp_path: Path) -> None:
    driver, root = _hybrid(tmp_path)
    _kernel_group(root / "memory" / "rexcarcer" / "web", V1_FILES["memory"])
    with pytest.raises(LimitError, match="the cgroups of jail web are incomplete"):
        driver.procs_files("web")


def test_remove_refuses_while_processes_remain_unless_asked_to_kill(tmp_path: Path) -> None:
    driver, root = _hybrid(tmp_path)
    driver.remove("web")  # nothing there: nothing to do
    _kernel_group(root / "pids" / "rexcarcer" / "web", V1_FILES["pids"])
    (root / "pids/rexcarcer/web/cgroup.procs").write_text("4242\n4243\n")
    with pytest.raises(LimitError, match="still hold processes: 4242 4243") as err:
        driver.remove("web")
    assert err.value.hint == "stop the jail first (rex stop web)"
    assert (root / "pids/rexcarcer/web").is_dir()


def test_parse_keyed_and_rlimits() -> None:
    assert parse_keyed("oom_kill_disable 0\nunder_oom 0\noom_kill 3\nbad\n") == {
        "oom_kill_disable": 0,
        "under_oom": 0,
        "oom_kill": 3,
    }
    import resource

    assert rlimits_for(Limits(openfiles=16)) == {resource.RLIMIT_NOFILE: (16, 16)}
    assert rlimits_for(Limits(memory=64 << 20)) == {}


def test_mountinfo_is_read_again_after_a_mount_only() -> None:
    """cgroup.MountInfo on a real process's mountinfo: a process in mount and
    user namespaces of its own (no root needed) mounts a tmpfs when told."""
    require_tools("unshare")
    script = "read x; mount -t tmpfs rexheldtest /tmp && echo mounted; exec sleep 60"
    child = subprocess.Popen(["unshare", "--user", "--map-root-user", "--mount", "sh", "-c",
                              script], stdin=subprocess.PIPE, stdout=subprocess.PIPE)  # fmt: skip
    assert child.stdin is not None and child.stdout is not None
    try:
        info = MountInfo(f"/proc/{child.pid}/mountinfo")
        deadline = time.monotonic() + 5
        while Path(f"/proc/{child.pid}/ns/mnt").readlink() == Path("/proc/self/ns/mnt").readlink():
            assert time.monotonic() < deadline, "unshare did not enter its namespaces"
            time.sleep(0.01)
        before = info.text()
        assert "rexheldtest" not in before and info.text() is before  # nothing changed
        child.stdin.write(b"go\n")
        child.stdin.flush()
        if child.stdout.readline() != b"mounted\n":
            missing("unprivileged user and mount namespaces (unshare -Urm)")
        after = info.text()
        assert "rexheldtest" in after and info.text() is after
    finally:
        child.kill()
        child.wait()
