"""Concurrency and crashes: 50 parallel `rex up`, SIGKILL mid-provisioning."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from tests.capability import linux_only
from tests.integration.conftest import Rex, sh, wait_until


def test_fifty_concurrent_ups_get_fifty_addresses(rex: Rex, tmp_path: Path) -> None:
    rexfile = tmp_path / "svc.rex"
    rexfile.write_text(
        f"BASE {rex.base}\nPROVISION RUN echo built > /built\nSERVICE renderer PORT 1234\n"
    )
    procs = [rex.popen("up", rexfile, "--name", f"r{i}") for i in range(50)]
    failures = []
    for i, p in enumerate(procs):
        _, err = p.communicate(timeout=600)
        if p.returncode != 0:
            failures.append((i, err))
    assert failures == []
    jails = rex.jails()
    assert len(jails) == 50
    assert all(j["state"] == "running" for j in jails.values())
    addresses = {rex.ip_of(n) for n in jails}
    assert len(addresses) == 50
    assert "203.0.113.1" not in addresses
    # one image was built, by exactly one of them
    images = sh("zfs", "list", "-H", "-o", "name", "-t", "snapshot", "-r", f"{rex.dataset}/images")
    assert len(images.stdout.split()) == 1


def test_sigkill_mid_provisioning_leaves_nothing_unrecoverable(rex: Rex, tmp_path: Path) -> None:
    linux_only("a build step dies with rex through PR_SET_PDEATHSIG, and its processes are "
               "found in /proc; on FreeBSD the step keeps running (docs/freebsd.md)")  # fmt: skip
    rexfile = tmp_path / "slow.rex"
    rexfile.write_text(
        "BASE busybox\nPROVISION RUN echo started > /marker; sleep 300\nSERVICE s PORT 1\n"
    )
    proc = rex.popen("up", rexfile)
    building = f"{rex.mnt}/images/"

    def step() -> list[str]:
        """The step's sleep, once it runs (rex up must still be running meanwhile)."""
        if proc.poll() is not None:
            _, err = proc.communicate()
            raise AssertionError(f"rex up ended (exit {proc.returncode}) before the kill:\n{err}")
        return _step_sleeps(building)

    started: list[str] = []
    try:
        started = wait_until(step, "the provisioning step running its sleep")
        [marker] = Path(building).glob("*/marker")
        assert marker.read_text() == "started\n"  # the step ran, in the image being built
        assert proc.poll() is None, "rex up must still be provisioning when it is killed"
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(timeout=60) == -signal.SIGKILL  # killed mid-step, not finished
    finally:
        if proc.poll() is None:  # a failure above: never leave our rex up (and its step) behind
            proc.kill()
            proc.wait(timeout=60)
    # the step's process tree dies with rex (no sleep left running on the dataset);
    # the kernel tears the namespaces down asynchronously: wait, far below its 300 s
    try:
        wait_until(lambda: not [p for p in started if _alive(p, "sleep 300")],
                   f"the step's sleep {started} dying with rex")  # fmt: skip
    finally:
        for pid in started:  # this test's own step, by PID, should it have survived
            if _alive(pid, "sleep 300"):
                os.kill(int(pid), signal.SIGKILL)
    # a later up succeeds (with a quick step this time) under the same name
    rexfile.write_text("BASE busybox\nPROVISION RUN echo fine > /marker\nSERVICE s PORT 1\n")
    rex.run("up", rexfile)
    assert rex.run("exec", "slow", "--", "cat", "/marker").stdout == "fine\n"
    rex.run("destroy", "slow")
    assert rex.leftovers() == rex.nothing
    # the killed step's half-built image was swept by the later build
    images = sh("zfs", "list", "-H", "-o", "name,rexcarcer:complete", "-r", f"{rex.dataset}/images")
    rows = [r.split("\t") for r in images.stdout.splitlines()[1:]]
    assert rows and all(c == "1" for _, c in rows), rows


def test_sigkill_after_start_is_cleaned_by_destroy(rex: Rex, tmp_path: Path) -> None:
    """A run killed after its jail started: `rex destroy` removes everything."""
    linux_only("it waits for the Linux runtime's run file (run/NAME.json) to kill rex")
    rexfile = tmp_path / "late.rex"
    rexfile.write_text("BASE busybox\n")
    proc = rex.popen("up", rexfile)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not list((rex.root / "run").glob("late.json")):
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    rex.run("destroy", "late")
    assert rex.leftovers() == rex.nothing
    assert rex.jails() == {}


def _step_sleeps(building: str) -> list[str]:
    """PIDs of the slow step's sleep: below the ``unshare`` that builds an image
    under ``building`` (inside, pivot_root makes the step's root plain "/")."""
    return [p.name for p in Path("/proc").iterdir() if p.name.isdigit()
            and _cmd(p).startswith("sleep 300")
            and any(f"--mount-proc={building}" in _cmd(a) for a in _ancestors(p))]  # fmt: skip


def _ancestors(proc: Path) -> list[Path]:
    out = []
    while len(out) < 8 and (ppid := _stat(proc)[1:2]) and ppid[0] not in ("0", "1"):
        proc = Path("/proc", ppid[0])
        out.append(proc)
    return out


def _stat(proc: Path) -> list[str]:
    """State, ppid, ... of /proc/PID/stat (after the command name in parentheses)."""
    try:
        return (proc / "stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return []


def _alive(pid: str, cmd: str) -> bool:
    """Still that process, and not a zombie (reaped late here: DESIGN.md section 7)."""
    proc = Path("/proc", pid)
    return _stat(proc)[:1] not in ([], ["Z"]) and _cmd(proc).startswith(cmd)


def _cmd(proc: Path) -> str:
    try:
        return (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""
