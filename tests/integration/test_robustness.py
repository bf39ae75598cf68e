"""Concurrency and crashes: 50 parallel `rex up`, SIGKILL mid-provisioning."""

from __future__ import annotations

import signal
import time
from pathlib import Path

from tests.integration.conftest import Rex, sh


def test_fifty_concurrent_ups_get_fifty_addresses(rex: Rex, tmp_path: Path) -> None:
    rexfile = tmp_path / "svc.rex"
    rexfile.write_text(
        "BASE busybox\nPROVISION RUN echo built > /built\nSERVICE renderer PORT 1234\n"
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
    rexfile = tmp_path / "slow.rex"
    rexfile.write_text(
        "BASE busybox\nPROVISION RUN echo started > /marker; sleep 30\nSERVICE s PORT 1\n"
    )
    proc = rex.popen("up", rexfile)
    deadline = time.monotonic() + 30
    mnt = rex.mnt
    while time.monotonic() < deadline:
        if list(Path(mnt, "images").glob("*/marker")):
            break
        time.sleep(0.05)
    else:
        raise AssertionError("the provisioning step never started")
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    # the step's process tree dies with rex (no sleep left running on the dataset):
    # the kernel tears the namespaces down asynchronously, so give it a moment, far
    # below the 30 s the step would otherwise live
    deadline = time.monotonic() + 10
    while left := [p for p in Path("/proc").iterdir()
                   if p.name.isdigit() and _cmd(p).startswith("sleep 30")]:  # fmt: skip
        assert time.monotonic() < deadline, f"the step outlived rex: {left}"
        time.sleep(0.05)
    # a later up succeeds (with a quick step this time) under the same name
    rexfile.write_text("BASE busybox\nPROVISION RUN echo fine > /marker\nSERVICE s PORT 1\n")
    rex.run("up", rexfile)
    assert rex.run("exec", "slow", "--", "cat", "/marker").stdout == "fine\n"
    rex.run("destroy", "slow")
    assert rex.leftovers() == {"netns": [], "datasets": [], "mounts": [], "processes": []}
    # the killed step's half-built image was swept by the later build
    images = sh("zfs", "list", "-H", "-o", "name,rexcarcer:complete", "-r", f"{rex.dataset}/images")
    rows = [r.split("\t") for r in images.stdout.splitlines()[1:]]
    assert rows and all(c == "1" for _, c in rows), rows


def test_sigkill_after_start_is_cleaned_by_destroy(rex: Rex, tmp_path: Path) -> None:
    """A run killed after its jail started: `rex destroy` removes everything."""
    rexfile = tmp_path / "late.rex"
    rexfile.write_text("BASE busybox\n")
    proc = rex.popen("up", rexfile)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not list((rex.root / "run").glob("late.json")):
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    rex.run("destroy", "late")
    assert rex.leftovers() == {"netns": [], "datasets": [], "mounts": [], "processes": []}
    assert rex.jails() == {}


def _cmd(proc: Path) -> str:
    try:
        return (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""
