"""Jail logs for real: Debian's rsyslogd, started by the test in the test's network
namespace with the configuration rex renders, collects what ``logger`` says in a
jail (busybox syslogd -R, started by rex's rc.pre), and ``rex logs`` shows it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from rexcarcer.config import load_config
from rexcarcer.logs import collector, service
from rexcarcer.wiring import open_host
from tests.capability import linux_only, require_tools
from tests.integration.conftest import Rex, sh


@pytest.fixture(autouse=True)
def _linux_only() -> None:
    linux_only(
        "busybox syslogd in the jails and rsyslogd under `rex host serve` in the test's namespace"
    )


HOST = "203.0.113.1"


def require_rsyslog() -> None:
    require_tools("rsyslogd")


@pytest.fixture
def collected(rex: Rex) -> Iterator[collector.CollectorPaths]:
    """rex's rsyslog.conf, and rsyslogd running with it in the test's netns."""
    require_rsyslog()
    host = open_host(load_config(environ=rex.env))
    paths = service.paths_for(host.config)
    try:
        service.write_config(host, [])
    finally:
        host.close()
    sh(*collector.check_argv(paths))
    proc = subprocess.Popen(
        ["nsenter", f"--net=/run/netns/{rex.netns}", "--", *collector.run_argv(paths)],
        stdout=subprocess.DEVNULL, stderr=open(paths.dir / "stderr", "w"),  # noqa: SIM115
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 10
        while not service.bound(proc.pid, HOST, 514):
            assert proc.poll() is None, (paths.dir / "stderr").read_text()
            assert time.monotonic() < deadline, "rsyslogd did not bind"
            time.sleep(0.01)
        assert service.collector_pid(paths) == proc.pid or _wait_pidfile(paths, proc.pid)
        yield paths
    finally:
        proc.terminate()  # ours, by PID
        proc.wait(timeout=10)


def _wait_pidfile(paths: collector.CollectorPaths, pid: int) -> bool:
    deadline = time.monotonic() + 5
    while service.collector_pid(paths) != pid and time.monotonic() < deadline:
        time.sleep(0.01)
    return service.collector_pid(paths) == pid


def write_rex(tmp_path: Path, name: str) -> Path:
    """A jail whose /etc/rc logs a line at start."""
    path = tmp_path / f"{name}.rex"
    path.write_text(
        "BASE busybox\nPROVISION RUN printf 'logger -t rc started by /etc/rc\\n' > /etc/rc\n"
    )
    return path


def wait_for(rex: Rex, jail: str, text: str, timeout: float = 10) -> str:
    deadline = time.monotonic() + timeout
    while True:
        out = rex.run("logs", jail, check=False).stdout
        if text in out:
            return out
        assert time.monotonic() < deadline, f"{text!r} not in the log of {jail}:\n{out}"
        time.sleep(0.05)


def test_logger_in_a_jail_shows_up_in_rex_logs(
    rex: Rex, tmp_path: Path, collected: collector.CollectorPaths
) -> None:
    rex.run("up", write_rex(tmp_path, "a"))
    rex.run("exec", "a", "--", "logger", "-t", "rextest", "hello from jail a")
    out = wait_for(rex, "a", "rextest: hello from jail a")
    line = next(ln for ln in out.splitlines() if "hello from jail a" in ln)
    assert line.split()[1] == rex.ip_of("a")  # busybox sends no host name: the address
    assert "rc: started by /etc/rc" in out, [
        (p.name, p.read_text()) for p in collected.logs.iterdir()
    ]  # forwarding runs before the jail's /etc/rc
    rex.run("exec", "a", "--", "logger", "-p", "daemon.err", "second line")
    wait_for(rex, "a", "second line")
    assert rex.run("logs", "a", "-n", "1").stdout.rstrip().endswith("second line")
    assert rex.json("logs", "a", "-n", "2")["lines"][-1].endswith("second line")  # type: ignore[index]
    mode = (collected.logs / "a.log").stat().st_mode & 0o777
    assert mode == 0o640


def test_the_file_is_chosen_by_source_address_not_by_claimed_host_name(
    rex: Rex, tmp_path: Path, collected: collector.CollectorPaths
) -> None:
    rex.run("up", write_rex(tmp_path, "a"))
    rex.run("up", write_rex(tmp_path, "b"))
    # from b's address, a datagram forging a's name, and a path, as its HOSTNAME
    # (busybox has no UDP client, so the host's python sends it in b's netns)
    for forged in ("a", "../../../../tmp/escaped", "a.jail.rex.internal"):
        datagram = f"<13>Jan  1 00:00:00 {forged} forger: claims to be {forged}"
        send = (
            f"import socket; socket.socket(socket.AF_INET, socket.SOCK_DGRAM)"
            f".sendto({datagram.encode()!r}, ({HOST!r}, 514))"
        )
        sh("nsenter", f"--net=/run/netns/rex-{rex.token}-b", "--", sys.executable, "-c", send)
    newline = b"<13>Jan  1 00:00:00 b forger: one line\nJan  1 00:00:00 a forged: second line"
    send = f"import socket; socket.socket(2, 2).sendto({newline!r}, ({HOST!r}, 514))"
    sh("nsenter", f"--net=/run/netns/rex-{rex.token}-b", "--", sys.executable, "-c", send)
    wait_for(rex, "b", "claims to be a.jail.rex.internal")
    out = wait_for(rex, "b", "second line")
    assert "forger: one line#012Jan  1 00:00:00 a forged: second line" in out  # one line
    assert "claims to be" not in rex.run("logs", "a").stdout
    assert {p.name for p in collected.logs.iterdir()} == {"a.log", "b.log"}
    assert not Path("/tmp/escaped.log").exists()
    # the host itself is no jail: its messages go to _unknown.log
    rex.in_netns("logger", "-d", "-n", HOST, "-P", "514", "-t", "hostside", "not a jail")
    deadline = time.monotonic() + 10
    while not (collected.logs / "_unknown.log").exists():
        assert time.monotonic() < deadline
        time.sleep(0.05)


def test_follow_destroy_and_unknown_jails(
    rex: Rex, tmp_path: Path, collected: collector.CollectorPaths
) -> None:
    rex.run("up", write_rex(tmp_path, "a"))
    rex.run("exec", "a", "--", "logger", "-t", "rextest", "before follow")
    wait_for(rex, "a", "before follow")
    follower = rex.popen("logs", "a", "-f", "-n", "1")
    try:
        assert follower.stdout is not None
        assert "before follow" in follower.stdout.readline()
        rex.run("exec", "a", "--", "logger", "-t", "rextest", "while following")
        assert "while following" in follower.stdout.readline()
    finally:
        follower.terminate()  # ours, by PID
        follower.wait(timeout=10)
    ip = rex.ip_of("a")
    assert ip in collected.table.read_text()
    rex.run("destroy", "a")
    assert ip not in collected.table.read_text()
    assert "while following" in rex.run("logs", "a").stdout  # kept after destroy
    missing = rex.run("logs", "nosuch", check=False)
    assert missing.returncode == 11 and "no jail named 'nosuch'" in missing.stderr


def test_rex_host_serve_runs_the_collector_beside_unbound(rex: Rex, tmp_path: Path) -> None:
    """The collector as a jailer service: started, restarted and stopped by
    `rex host serve`, with nothing started by the test itself."""
    require_rsyslog()
    require_tools("unbound")
    rex.run("host", "serve", "--detach")
    try:
        paths = service.paths_for(load_config(environ=rex.env))
        first = service.collector_pid(paths)
        assert first is not None
        doctor = rex.run("doctor", check=False).stdout
        assert f"collector rsyslogd {first} on {HOST}:514" in doctor
        rex.run("up", write_rex(tmp_path, "a"))
        rex.run("exec", "a", "--", "logger", "-t", "rextest", "served")
        wait_for(rex, "a", "rextest: served")
        os.kill(first, signal.SIGKILL)  # the supervisor restarts it
        deadline = time.monotonic() + 10
        while service.collector_pid(paths) in (None, first):
            assert time.monotonic() < deadline, "rsyslogd was not restarted"
            time.sleep(0.05)
        rex.run("exec", "a", "--", "logger", "-t", "rextest", "after restart")
        wait_for(rex, "a", "rextest: after restart")
    finally:
        rex.run("host", "serve", "--stop", check=False)
    assert service.collector_pid(paths) is None
