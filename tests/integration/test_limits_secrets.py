"""LIMIT and SECRET on the real Linux platform, through the `rex` CLI: the kernel
enforces the limits (an OOM kill inside the jail, a fork bomb stopped), `rex
exec` runs inside the jail's cgroups and root in the jail cannot leave them,
and a secret reaches /run/secrets on a tmpfs before /etc/rc and nowhere else.

Each jail's groups are rexcarcer/rex-<token>/<jail> (the token of the test's
state directory); `rex destroy` in the fixture's teardown removes them, and
this module removes the rex-<token> parents its tests leave.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.conftest import Rex, sh, wait_until

CGROUP = Path("/sys/fs/cgroup")


@pytest.fixture
def lrex(rex: Rex) -> Iterator[Rex]:
    """The `rex` fixture, and afterwards its per-state-directory cgroup parents
    removed (empty by then: its jails were destroyed)."""
    yield rex
    for name in rex.jails():  # before the rex fixture's own teardown would: the groups go
        rex.run("destroy", name, check=False)
    for controller in ("memory", "cpu", "cpuacct", "cpu,cpuacct", "pids"):
        parent = CGROUP / controller / "rexcarcer" / f"rex-{rex.token}"
        with contextlib.suppress(OSError):
            parent.rmdir()


def _group(rex: Rex, controller: str, jail: str) -> Path:
    return CGROUP / controller / "rexcarcer" / f"rex-{rex.token}" / jail


def _need_v1(controller: str) -> None:
    if not (CGROUP / controller / "cgroup.procs").exists():
        from tests.capability import missing

        missing(f"a cgroup v1 {controller} hierarchy at {CGROUP / controller}")


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / f"{name}.rex"
    path.write_text(text)
    return path


def _host_pids(cmdline: str) -> list[int]:
    out = []
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            with contextlib.suppress(OSError):
                if (p / "cmdline").read_bytes().replace(b"\0", b" ").strip() == cmdline.encode():
                    out.append(int(p.name))
    return out


def test_memory_limit_is_an_oom_kill_inside_the_jail(lrex: Rex, tmp_path: Path) -> None:
    _need_v1("memory")
    lrex.run("up", _write(tmp_path, "web", "BASE busybox\nLIMIT memory 32M\nLIMIT cpu 0.5\n"))
    mem = _group(lrex, "memory", "web")
    assert (mem / "memory.limit_in_bytes").read_text().strip() == str(32 << 20)
    cpu = next(p for p in (_group(lrex, c, "web") for c in ("cpu,cpuacct", "cpu")) if p.exists())
    assert (cpu / "cpu.cfs_quota_us").read_text().strip() == "50000"
    sentinel = subprocess.Popen(["sleep", "300"])  # a host process beside the jail
    try:
        # busybox dd allocates its 100 MiB block and fills it from /dev/zero
        hog = lrex.run("exec", "web", "--", "dd", "if=/dev/zero", "of=/dev/null", "bs=100M",
                       "count=1", check=False)  # fmt: skip
        assert hog.returncode == 128 + signal.SIGKILL, (hog.returncode, hog.stderr)
        usage = lrex.jails()["web"]["usage"]
        assert isinstance(usage, dict)
        assert usage["oom_kills"] >= 1, usage
        assert usage["memory"] <= 32 << 20
        assert lrex.jails()["web"]["limits"] == {"memory": 32 << 20, "cpu": 0.5}
        # the host is unharmed: its process runs on, the jail still answers
        assert sentinel.poll() is None
        assert lrex.run("exec", "web", "--", "echo", "alive").stdout == "alive\n"
        assert lrex.jails()["web"]["state"] == "running"
    finally:
        sentinel.kill()
        sentinel.wait()
    lrex.run("destroy", "web")
    assert not mem.exists()


def test_pids_limit_stops_a_fork_bomb(lrex: Rex, tmp_path: Path) -> None:
    _need_v1("pids")
    lrex.run("up", _write(tmp_path, "bomb", "BASE busybox\nLIMIT pids 20\n"))
    pids = _group(lrex, "pids", "bomb")
    # the sleepers leave rex exec's output alone, or it would wait for them
    bomb = ("i=0; while [ $i -lt 200 ]; do sleep 600 </dev/null >/dev/null 2>&1 & "
            "i=$((i+1)); done; echo forked-all")  # fmt: skip
    done = lrex.run("exec", "bomb", "--", "sh", "-c", bomb, check=False)
    assert "can't fork" in done.stdout + done.stderr, (done.stdout, done.stderr)
    assert "forked-all" not in done.stdout
    assert int((pids / "pids.current").read_text()) <= 20
    assert int((pids / "pids.events").read_text().split()[1]) >= 1  # "max N": forks refused
    assert lrex.jails()["bomb"]["state"] == "running"  # the jail itself lives on
    members = [int(p) for p in (pids / "cgroup.procs").read_text().split()]
    lrex.run("stop", "bomb")  # takes every process of the jail with it
    assert not pids.exists()
    assert all(not Path(f"/proc/{p}/cmdline").exists() or not Path(f"/proc/{p}/cmdline")
               .read_bytes() for p in members)  # fmt: skip


def test_exec_runs_in_the_jails_cgroups_and_root_cannot_leave(lrex: Rex, tmp_path: Path) -> None:
    _need_v1("pids")
    lrex.run("up", _write(tmp_path, "box", "BASE busybox\nLIMIT pids 100\nLIMIT openfiles 100\n"))
    group = f"/rexcarcer/rex-{lrex.token}/box"
    # inside, the jail's groups are the root of its cgroup namespace
    seen = lrex.run("exec", "box", "--", "cat", "/proc/self/cgroup").stdout
    assert any(line.endswith(":pids:/") for line in seen.splitlines()), seen
    assert group not in seen
    assert lrex.run("exec", "box", "--", "sh", "-c", "ulimit -n").stdout.strip() == "100"
    # root in the jail mounts the pids hierarchy and writes itself into its root
    escape = ("mkdir -p /tmp/cg && mount -t cgroup -o pids cgroup /tmp/cg && "
              "echo $$ > /tmp/cg/cgroup.procs && cat /tmp/cg/cgroup.procs > /tmp/seen && "
              "exec sleep 777")  # fmt: skip
    proc = subprocess.Popen(lrex.argv("exec", "box", "--", "sh", "-c", escape), env=lrex.env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
    try:
        [pid] = wait_until(lambda: _host_pids("sleep 777"), "the exec'd sleep runs")
        cgroups = Path(f"/proc/{pid}/cgroup").read_text()
        pids_line = next(line for line in cgroups.splitlines() if ":pids:" in line)
        assert pids_line.endswith(group), cgroups  # still in the jail's group
        memory_line = next(line for line in cgroups.splitlines() if ":memory:" in line)
        assert memory_line.endswith(group), cgroups
        inside = [int(p) for p in _group(lrex, "pids", "box").joinpath("cgroup.procs")
                  .read_text().split()]  # fmt: skip
        assert pid in inside
        # the cgroupfs root it mounted is its own group: it lists only jail processes
        listed = lrex.run("exec", "box", "--", "cat", "/tmp/seen").stdout.split()
        assert 0 < len(listed) <= len(inside) + 2
    finally:
        lrex.run("stop", "box")
        proc.wait(timeout=30)
    assert _host_pids("sleep 777") == []


def _all_files(root: Path, skip: Path) -> Iterator[Path]:
    for dirpath, _, files in os.walk(root):
        for f in files:
            path = Path(dirpath) / f
            if skip not in path.parents and path.is_file() and not path.is_symlink():
                yield path


def test_a_secret_reaches_the_jail_only(lrex: Rex, tmp_path: Path) -> None:
    value = f"s3cret-{uuid.uuid4().hex}"
    set_ = subprocess.run(lrex.argv("secret", "set", "db"), input=value, text=True,
                          env=lrex.env, capture_output=True)  # fmt: skip
    assert set_.returncode == 0, set_.stderr
    assert value not in set_.stdout + set_.stderr
    secrets_dir = lrex.root / "secrets"
    assert (secrets_dir.stat().st_mode & 0o777, (secrets_dir / "db").stat().st_mode & 0o777) == (
        0o700, 0o600)  # fmt: skip
    # the jail's /etc/rc notes whether the secret was there when it ran
    rc = tmp_path / "rc"
    rc.write_text("#!/bin/sh\ntest -s /run/secrets/db && echo rc-saw-it > /tmp/rc-saw\n")
    app = _write(tmp_path, "app", "BASE busybox\nPROVISION COPY rc /etc/rc\nSECRET db\n")
    plan = lrex.run("plan", app).stdout + lrex.run("-o", "json", "plan", str(app)).stdout
    assert "/run/secrets/db" in plan and value not in plan
    up = lrex.run("--debug", "up", app)
    assert value not in up.stdout + up.stderr
    assert lrex.run("exec", "app", "--", "cat", "/run/secrets/db").stdout == value
    assert lrex.run("exec", "app", "--", "stat", "-c", "%a %u %g",
                    "/run/secrets/db").stdout.split() == ["400", "0", "0"]  # fmt: skip
    assert lrex.run("exec", "app", "--", "cat", "/tmp/rc-saw").stdout == "rc-saw-it\n"
    mounts = lrex.run("exec", "app", "--", "cat", "/proc/mounts").stdout
    assert any(m.split()[1:3] == ["/run/secrets", "tmpfs"] for m in mounts.splitlines()), mounts
    # nowhere else: not on the jail's disk, not in the store, not in rex's files
    disk = Path(lrex.mnt) / "jails" / "app"
    assert list((disk / "run" / "secrets").iterdir()) == []  # the empty mount point only
    leaks = [p for base in (disk, lrex.root) for p in _all_files(base, secrets_dir)
             if value.encode() in p.read_bytes()]  # fmt: skip
    assert leaks == []
    db = next(lrex.root.glob("*.db"))
    with contextlib.closing(sqlite3.connect(db)) as conn:
        rows = conn.execute("SELECT * FROM kv").fetchall()
    assert rows and not any(value in str(row) for row in rows)
    record = json.loads(next(str(r[1]) for r in rows if str(r[0]) == "jails/app"))
    assert record["secrets"] == ["db"]
    listing = lrex.run("-o", "json", "ls").stdout + lrex.run("ls").stdout
    listing += lrex.run("-o", "json", "secret", "ls").stdout + lrex.run("secret", "ls").stdout
    assert value not in listing and "db" in listing
    # a new value takes effect at the next start; the jail keeps the old one until then
    again = f"rotated-{uuid.uuid4().hex}"
    subprocess.run(lrex.argv("secret", "set", "db"), input=again, text=True, env=lrex.env,
                   check=True, capture_output=True)  # fmt: skip
    assert lrex.run("exec", "app", "--", "cat", "/run/secrets/db").stdout == value
    lrex.run("restart", "app")
    assert lrex.run("exec", "app", "--", "cat", "/run/secrets/db").stdout == again
    refused = lrex.run("secret", "rm", "db", check=False)
    assert refused.returncode == 12 and "used by jail" in refused.stderr


def test_an_unknown_secret_is_refused_with_nothing_created(lrex: Rex, tmp_path: Path) -> None:
    app = _write(tmp_path, "app", "BASE busybox\nLIMIT pids 10\nSECRET missing\n")
    for verb in ("up", "plan"):
        done = lrex.run(verb, app, check=False)
        assert done.returncode == 47, done.stderr
        assert "no secret named 'missing'" in done.stderr and "rex secret set missing" in (
            done.stderr)  # fmt: skip
    assert lrex.jails() == {}
    assert lrex.leftovers() == {"netns": [], "datasets": [], "mounts": [], "processes": []}
    assert not _group(lrex, "pids", "app").exists()


def test_bad_limit_and_secret_input(lrex: Rex, tmp_path: Path) -> None:
    bad = lrex.run("check", _write(tmp_path, "bad", "BASE busybox\nLIMIT memory 1.5G\n"),
                   check=False)  # fmt: skip
    assert bad.returncode == 10 and "bad.rex:2:14: memory size '1.5G' is not a whole number" in (
        bad.stderr)  # fmt: skip
    bad = lrex.run("check", _write(tmp_path, "bad", "BASE busybox\nLIMIT swap 1G\n"), check=False)
    assert bad.returncode == 10 and "bad.rex:2:7: unknown resource 'swap'" in bad.stderr
    bad = lrex.run("check", _write(tmp_path, "bad", "BASE busybox\nSECRET a/b\n"), check=False)
    assert bad.returncode == 10 and "bad.rex:2:8: bad secret name" in bad.stderr
    name = subprocess.run(lrex.argv("secret", "set", "../x"), input="v", text=True,
                          env=lrex.env, capture_output=True)  # fmt: skip
    assert name.returncode == 2 and "bad secret name" in name.stderr
    empty = subprocess.run(lrex.argv("secret", "set", "x"), input="", text=True, env=lrex.env,
                           capture_output=True)  # fmt: skip
    assert empty.returncode == 47 and "is empty" in empty.stderr
    assert not (lrex.root / "secrets" / "x").exists()
    sh("true")
