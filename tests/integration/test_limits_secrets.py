"""LIMIT and SECRET on the real Linux platform, through the `rex` CLI: the kernel
enforces the limits (an OOM kill inside the jail, a fork bomb stopped), `rex
exec` runs inside the jail's cgroups and root in the jail cannot leave them,
and a secret reaches /run/secrets on a tmpfs before /etc/rc and nowhere else.

Each jail's groups are rexcarcer/rex-<token>/<jail> (the token of the test's
state directory); `rex destroy` in the fixture's teardown removes them, then
the empty rex-<token> parents (conftest.remove_cgroup_parents).
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

from tests.integration.conftest import Rex, sh, wait_until
from tests.schemas import validate

CGROUP = Path("/sys/fs/cgroup")


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


def test_memory_limit_is_an_oom_kill_inside_the_jail(rex: Rex, tmp_path: Path) -> None:
    _need_v1("memory")
    rex.run("up", _write(tmp_path, "web", "BASE busybox\nLIMIT memory 32M\nLIMIT cpu 0.5\n"))
    mem = _group(rex, "memory", "web")
    assert (mem / "memory.limit_in_bytes").read_text().strip() == str(32 << 20)
    cpu = next(p for p in (_group(rex, c, "web") for c in ("cpu,cpuacct", "cpu")) if p.exists())
    assert (cpu / "cpu.cfs_quota_us").read_text().strip() == "50000"
    sentinel = subprocess.Popen(["sleep", "300"])  # a host process beside the jail
    try:
        # busybox dd allocates its 100 MiB block and fills it from /dev/zero
        hog = rex.run("exec", "web", "--", "dd", "if=/dev/zero", "of=/dev/null", "bs=100M",
                       "count=1", check=False)  # fmt: skip
        assert hog.returncode == 128 + signal.SIGKILL, (hog.returncode, hog.stderr)
        usage = rex.jails()["web"]["usage"]
        assert isinstance(usage, dict)
        assert usage["oom_kills"] >= 1, usage
        assert usage["memory"] <= 32 << 20
        assert rex.jails()["web"]["limits"] == {"memory": 32 << 20, "cpu": 0.5}
        # the host is unharmed: its process runs on, the jail still answers
        assert sentinel.poll() is None
        assert rex.run("exec", "web", "--", "echo", "alive").stdout == "alive\n"
        assert rex.jails()["web"]["state"] == "running"
    finally:
        sentinel.kill()
        sentinel.wait()
    rex.run("destroy", "web")
    assert not mem.exists()


def test_pids_limit_stops_a_fork_bomb(rex: Rex, tmp_path: Path) -> None:
    _need_v1("pids")
    rex.run("up", _write(tmp_path, "bomb", "BASE busybox\nLIMIT pids 20\n"))
    pids = _group(rex, "pids", "bomb")
    # the sleepers leave rex exec's output alone, or it would wait for them
    bomb = ("i=0; while [ $i -lt 200 ]; do sleep 600 </dev/null >/dev/null 2>&1 & "
            "i=$((i+1)); done; echo forked-all")  # fmt: skip
    done = rex.run("exec", "bomb", "--", "sh", "-c", bomb, check=False)
    assert "can't fork" in done.stdout + done.stderr, (done.stdout, done.stderr)
    assert "forked-all" not in done.stdout
    assert int((pids / "pids.current").read_text()) <= 20
    assert int((pids / "pids.events").read_text().split()[1]) >= 1  # "max N": forks refused
    assert rex.jails()["bomb"]["state"] == "running"  # the jail itself lives on
    members = [int(p) for p in (pids / "cgroup.procs").read_text().split()]
    rex.run("stop", "bomb")  # takes every process of the jail with it
    assert not pids.exists()
    assert all(not Path(f"/proc/{p}/cmdline").exists() or not Path(f"/proc/{p}/cmdline")
               .read_bytes() for p in members)  # fmt: skip


def test_exec_runs_in_the_jails_cgroups_and_root_cannot_leave(rex: Rex, tmp_path: Path) -> None:
    _need_v1("pids")
    rex.run("up", _write(tmp_path, "box", "BASE busybox\nLIMIT pids 100\nLIMIT openfiles 100\n"))
    group = f"/rexcarcer/rex-{rex.token}/box"
    # inside, the jail's groups are the root of its cgroup namespace
    seen = rex.run("exec", "box", "--", "cat", "/proc/self/cgroup").stdout
    assert any(line.endswith(":pids:/") for line in seen.splitlines()), seen
    assert group not in seen
    assert rex.run("exec", "box", "--", "sh", "-c", "ulimit -n").stdout.strip() == "100"
    # root in the jail tries to mount the pids hierarchy to move itself out: it
    # holds no CAP_SYS_ADMIN (runtime/jailenter.py), so the mount fails and the
    # process stays in the jail's groups
    escape = ("mkdir -p /tmp/cg; mount -t cgroup -o pids cgroup /tmp/cg 2>/dev/null; "
              "echo $? > /tmp/mount.rc; echo $$ > /tmp/cg/cgroup.procs 2>/dev/null; "
              "exec sleep 777")  # fmt: skip
    proc = subprocess.Popen(rex.argv("exec", "box", "--", "sh", "-c", escape), env=rex.env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
    try:
        [pid] = wait_until(lambda: _host_pids("sleep 777"), "the exec'd sleep runs")
        assert rex.run("exec", "box", "--", "cat", "/tmp/mount.rc").stdout.strip() != "0"
        cgroups = Path(f"/proc/{pid}/cgroup").read_text()
        pids_line = next(line for line in cgroups.splitlines() if ":pids:" in line)
        assert pids_line.endswith(group), cgroups  # still in the jail's group
        memory_line = next(line for line in cgroups.splitlines() if ":memory:" in line)
        assert memory_line.endswith(group), cgroups
        inside = [int(p) for p in _group(rex, "pids", "box").joinpath("cgroup.procs")
                  .read_text().split()]  # fmt: skip
        assert pid in inside
    finally:
        rex.run("stop", "box")
        proc.wait(timeout=30)
    assert _host_pids("sleep 777") == []


def _all_files(root: Path, skip: Path) -> Iterator[Path]:
    for dirpath, _, files in os.walk(root):
        for f in files:
            path = Path(dirpath) / f
            if skip not in path.parents and path.is_file() and not path.is_symlink():
                yield path


def test_a_secret_reaches_the_jail_only(rex: Rex, tmp_path: Path) -> None:
    value = f"s3cret-{uuid.uuid4().hex}"
    set_ = subprocess.run(rex.argv("-o", "json", "secret", "set", "db"), input=value, text=True,
                          env=rex.env, capture_output=True)  # fmt: skip
    assert set_.returncode == 0, set_.stderr
    assert value not in set_.stdout + set_.stderr
    validate("secret-set", json.loads(set_.stdout))
    secrets_dir = rex.root / "secrets"
    assert (secrets_dir.stat().st_mode & 0o777, (secrets_dir / "db").stat().st_mode & 0o777) == (
        0o700, 0o600)  # fmt: skip
    # the jail's /etc/rc notes whether the secret was there when it ran
    rc = tmp_path / "rc"
    rc.write_text("#!/bin/sh\ntest -s /run/secrets/db && echo rc-saw-it > /tmp/rc-saw\n")
    app = _write(tmp_path, "app", "BASE busybox\nPROVISION COPY rc /etc/rc\nSECRET db\n")
    plan = rex.run("plan", app).stdout + rex.run("-o", "json", "plan", str(app)).stdout
    assert "/run/secrets/db" in plan and value not in plan
    up = rex.run("--debug", "up", app)
    assert value not in up.stdout + up.stderr
    assert rex.run("exec", "app", "--", "cat", "/run/secrets/db").stdout == value
    assert rex.run("exec", "app", "--", "stat", "-c", "%a %u %g",
                    "/run/secrets/db").stdout.split() == ["400", "0", "0"]  # fmt: skip
    assert rex.run("exec", "app", "--", "cat", "/tmp/rc-saw").stdout == "rc-saw-it\n"
    mounts = rex.run("exec", "app", "--", "cat", "/proc/mounts").stdout
    assert any(m.split()[1:3] == ["/run/secrets", "tmpfs"] for m in mounts.splitlines()), mounts
    # nowhere else: not on the jail's disk, not in the store, not in rex's files
    disk = Path(rex.mnt) / "jails" / "app"
    assert list((disk / "run" / "secrets").iterdir()) == []  # the empty mount point only
    leaks = [p for base in (disk, rex.root) for p in _all_files(base, secrets_dir)
             if value.encode() in p.read_bytes()]  # fmt: skip
    assert leaks == []
    db = next(rex.root.glob("*.db"))
    with contextlib.closing(sqlite3.connect(db)) as conn:
        rows = conn.execute("SELECT * FROM kv").fetchall()
    assert rows and not any(value in str(row) for row in rows)
    record = json.loads(next(str(r[1]) for r in rows if str(r[0]) == "jails/app"))
    assert record["secrets"] == ["db"]
    listing = rex.run("-o", "json", "ls").stdout + rex.run("ls").stdout
    listed = rex.run("-o", "json", "secret", "ls").stdout
    validate("secret-ls", json.loads(listed))
    listing += listed + rex.run("secret", "ls").stdout
    assert value not in listing and "db" in listing
    # a new value takes effect at the next start; the jail keeps the old one until then
    again = f"rotated-{uuid.uuid4().hex}"
    subprocess.run(rex.argv("secret", "set", "db"), input=again, text=True, env=rex.env,
                   check=True, capture_output=True)  # fmt: skip
    assert rex.run("exec", "app", "--", "cat", "/run/secrets/db").stdout == value
    rex.run("restart", "app")
    assert rex.run("exec", "app", "--", "cat", "/run/secrets/db").stdout == again
    refused = rex.run("secret", "rm", "db", check=False)
    assert refused.returncode == 12 and "used by jail" in refused.stderr
    rex.run("destroy", "app")
    validate("secret-rm", json.loads(rex.run("-o", "json", "secret", "rm", "db").stdout))


def test_an_unknown_secret_is_refused_with_nothing_created(rex: Rex, tmp_path: Path) -> None:
    app = _write(tmp_path, "app", "BASE busybox\nLIMIT pids 10\nSECRET missing\n")
    for verb in ("up", "plan"):
        done = rex.run(verb, app, check=False)
        assert done.returncode == 70, done.stderr
        assert "no secret named 'missing'" in done.stderr and "rex secret set missing" in (
            done.stderr)  # fmt: skip
    assert rex.jails() == {}
    assert rex.leftovers() == {"netns": [], "datasets": [], "mounts": [], "processes": []}
    assert not _group(rex, "pids", "app").exists()


def test_bad_limit_and_secret_input(rex: Rex, tmp_path: Path) -> None:
    bad = rex.run("check", _write(tmp_path, "bad", "BASE busybox\nLIMIT memory 1.5G\n"),
                   check=False)  # fmt: skip
    assert bad.returncode == 10 and "bad.rex:2:14: memory size '1.5G' is not a whole number" in (
        bad.stderr)  # fmt: skip
    bad = rex.run("check", _write(tmp_path, "bad", "BASE busybox\nLIMIT swap 1G\n"), check=False)
    assert bad.returncode == 10 and "bad.rex:2:7: unknown resource 'swap'" in bad.stderr
    bad = rex.run("check", _write(tmp_path, "bad", "BASE busybox\nSECRET a/b\n"), check=False)
    assert bad.returncode == 10 and "bad.rex:2:8: bad secret name" in bad.stderr
    name = subprocess.run(rex.argv("secret", "set", "../x"), input="v", text=True,
                          env=rex.env, capture_output=True)  # fmt: skip
    assert name.returncode == 2 and "bad secret name" in name.stderr
    empty = subprocess.run(rex.argv("secret", "set", "x"), input="", text=True, env=rex.env,
                           capture_output=True)  # fmt: skip
    assert empty.returncode == 70 and "is empty" in empty.stderr
    assert not (rex.root / "secrets" / "x").exists()
    sh("true")
