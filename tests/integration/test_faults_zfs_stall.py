"""ZFS going away: the machine's zfs-fuse daemon is stopped with SIGSTOP for a
few seconds at a time (never killed: it is one per machine and its FUSE mounts
would go with it) while rex runs, then continued with SIGCONT.

With REX_ZFS_TIMEOUT=3, `rex ls`, `rex destroy` of a running jail and `rex up`
of a new jail (stopped as it clones) come back within the stated time: the
timeout, plus the grace rex gives a killed zfs to go, plus Python's start.
`rex destroy` and `rex up` fail with exit 85 and say the ZFS daemon is not
answering; the running jail keeps running; after SIGCONT the agent's next tick
removes what the interrupted `rex up` left, and the same `rex up` then works.

zfs-fuse is shared with everyone on the machine: each stop is as short as the
commands need, a timer continues the daemon after MAX_STOP seconds whatever
the test does, and a ``finally`` continues it too. Run it under the machine's
test lock (flock -o /run/rexcarcer/tests.lock).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.capability import linux_only, missing
from tests.integration.conftest import Rex, copy_example, sh, wait_until
from tests.integration.faults import claims, store

TIMEOUT = 3  # REX_ZFS_TIMEOUT for this test
KILL_GRACE = 2  # run.py KILL_GRACE: how long rex waits for a killed zfs to go
BOUND = TIMEOUT + KILL_GRACE + 10  # + Python's start and the work around it, on a busy machine
MAX_STOP = 20  # the daemon is continued after this long whatever happens
ZFS_UNRESPONSIVE = 85


def zfs_fuse_pid() -> int:
    try:
        pid = int(Path("/run/zfs-fuse.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        found = sh("pidof", "zfs-fuse", check=False).stdout.split()
        if len(found) != 1:
            missing("one zfs-fuse daemon (the Linux test bed's ZFS)")
        pid = int(found[0])
    assert Path(f"/proc/{pid}/comm").read_text().strip() == "zfs-fuse", pid
    return pid


@contextmanager
def stopped_zfs() -> Iterator[None]:
    """zfs-fuse stopped for the body, and never longer than MAX_STOP seconds."""
    pid = zfs_fuse_pid()

    def cont() -> None:
        os.kill(pid, signal.SIGCONT)

    timer = threading.Timer(MAX_STOP, cont)
    os.kill(pid, signal.SIGSTOP)
    timer.start()
    t0 = time.monotonic()
    try:
        yield
    finally:
        timer.cancel()
        cont()
        held = time.monotonic() - t0
        print(f"zfs-fuse was stopped for {held:.1f} s")
    assert held < MAX_STOP, f"zfs-fuse stopped for {held:.1f} s"


def timed(rex: Rex, *args: str | Path) -> tuple[subprocess.CompletedProcess[str], float]:
    t0 = time.monotonic()
    done = rex.run(*args, check=False, timeout=MAX_STOP)
    return done, time.monotonic() - t0


def assert_unresponsive(done: subprocess.CompletedProcess[str], secs: float) -> None:
    assert done.returncode == ZFS_UNRESPONSIVE, (done.returncode, done.stderr)
    assert "the ZFS daemon is not answering" in done.stderr, done.stderr
    assert f"did not finish in {TIMEOUT} s" in done.stderr, done.stderr
    assert "zpool status" in done.stderr, done.stderr  # the hint
    assert secs < BOUND, secs


def up_stopped_at_clone(rex: Rex, rexfile: Path, name: str) -> tuple[int, str, float]:
    """`rex up` with zfs-fuse stopped as it prints its clone step."""
    proc = rex.popen("up", rexfile, "--name", name)
    assert proc.stderr is not None
    lines: list[str] = []
    try:
        for line in proc.stderr:
            lines.append(line)
            if "==> Cloning" in line:
                break
        else:
            raise AssertionError("rex up printed no clone step:\n" + "".join(lines))
        with stopped_zfs():
            t0 = time.monotonic()
            rest = proc.communicate(timeout=MAX_STOP - 2)[1]
            secs = time.monotonic() - t0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=60)
    return proc.returncode, "".join(lines) + rest, secs


def test_zfs_stopped_fails_clearly_and_the_agent_repairs(rex: Rex, tmp_path: Path) -> None:
    linux_only("zfs-fuse, a daemon that can be stopped, is the Linux test bed's ZFS")
    rex.env["REX_ZFS_TIMEOUT"] = str(TIMEOUT)
    src = copy_example(tmp_path)
    rex.run("up", src / "hello.rex", "--name", "keeper")
    fresh = tmp_path / "fresh.rex"
    fresh.write_text("BASE busybox\nENV ROLE=fresh\nSERVICE s PORT 7\n")
    rex.run("up", fresh, "--name", "warm")  # its image is built: the next up goes to the clone
    rex.run("destroy", "warm")

    with stopped_zfs():
        listing, ls_secs = timed(rex, "-o", "json", "ls")
        gone, destroy_secs = timed(rex, "destroy", "keeper")
    print(f"rex ls: exit {listing.returncode} in {ls_secs:.1f} s; "
          f"rex destroy: exit {gone.returncode} in {destroy_secs:.1f} s")  # fmt: skip
    # rex ls reads the store and the runtime, not ZFS: it answers; if a later
    # change makes it ask ZFS, it must fail clearly, in time
    assert ls_secs < BOUND, ls_secs
    if listing.returncode == 0:
        assert {j["name"]: j["state"] for j in json.loads(listing.stdout)} == {"keeper": "running"}
    else:
        assert_unresponsive(listing, ls_secs)
    assert_unresponsive(gone, destroy_secs)
    # the destroy changed nothing: the jail runs, with its record and address
    assert rex.jails()["keeper"]["state"] == "running"
    assert "hello" in rex.run("exec", "keeper", "--", "cat", "/var/www/index.html").stdout
    assert len(claims(rex, "keeper")) == 1

    code, out, up_secs = up_stopped_at_clone(rex, fresh, "fresh")
    print(f"rex up stopped at its clone: exit {code} in {up_secs:.1f} s")
    assert code == ZFS_UNRESPONSIVE, out
    assert "rex up fresh failed: the ZFS daemon is not answering" in out, out
    assert up_secs < BOUND, up_secs
    # rolled back outside ZFS: no address, no network namespace; the record is
    # left, owned by no run, for what ZFS may still carry out of the killed clone
    assert claims(rex, "fresh") == []
    assert f"rex-{rex.token}-fresh" not in sh("ip", "netns", "list").stdout
    rec = store(rex, "jails/").get("jails/fresh")
    assert isinstance(rec, dict) and rec["status"] == "creating" and not rec.get("pid"), rec

    log = (tmp_path / "agent.log").open("w")
    agent = subprocess.Popen(rex.argv("agent", "--idle", "1"), env=rex.env, stdout=log,
                             stderr=subprocess.STDOUT)  # fmt: skip
    try:
        wait_until(lambda: "jails/fresh" not in store(rex, "jails/"),
                   "the agent's tick removing what the stopped rex up left")  # fmt: skip
    finally:
        agent.send_signal(signal.SIGTERM)
        try:
            agent.wait(timeout=20)
        except subprocess.TimeoutExpired:
            agent.kill()
            agent.wait(timeout=10)
        log.close()
    agent_log = (tmp_path / "agent.log").read_text()
    assert "removed what an interrupted run left of fresh" in agent_log, agent_log
    left = rex.leftovers()
    assert left["datasets"] == [f"{rex.dataset}/jails/keeper"], left
    assert left["netns"] == [f"rex-{rex.token}-keeper"], left
    assert rex.jails()["keeper"]["state"] == "running"
    # the same rex up now works; then everything goes without a trace
    rex.run("up", fresh, "--name", "fresh")
    assert rex.jails()["fresh"]["state"] == "running"
    rex.run("destroy", "fresh")
    rex.run("destroy", "keeper")
    assert rex.leftovers() == rex.nothing
    assert store(rex, "jails/") == {} and claims(rex, "keeper") == []
