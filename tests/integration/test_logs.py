"""Jail logs for real: Debian's rsyslogd, started by the test in the test's network
namespace with the configuration rex renders, collects what ``logger`` says in a
jail (busybox syslogd -R, started by rex's rc.pre), and ``rex logs`` shows it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from rexcarcer.config import load_config
from rexcarcer.logs import collector, service
from rexcarcer.wiring import open_host
from tests.capability import require_tools
from tests.integration.conftest import Rex, sh

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


def send_from(rex: Rex, jail: str, *datagrams: bytes) -> None:
    """UDP datagrams to the collector from jail's network namespace (busybox has
    no UDP client, so the host's python sends them there)."""
    send = (
        "import socket, sys; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
        f"for d in {list(datagrams)!r}: s.sendto(d, ({HOST!r}, 514))"
    )
    sh("nsenter", f"--net=/run/netns/rex-{rex.token}-{jail}", "--", sys.executable, "-c", send)


def test_the_file_is_chosen_by_source_address_not_by_claimed_host_name(
    rex: Rex, tmp_path: Path, collected: collector.CollectorPaths
) -> None:
    rex.run("up", write_rex(tmp_path, "a"))
    rex.run("up", write_rex(tmp_path, "b"))
    token = uuid.uuid4().hex[:8]
    # from b's address, messages whose HOSTNAME claims another jail's name (in
    # both syslog formats), rex's own "unknown" name, or a path: absolute, or
    # climbing far enough from the log directory to reach / and the test's tmp_path
    claims = {
        "a": f"<13>Jan  1 00:00:00 a forger: claim-1-{token}",
        "a.jail.rex.internal": f"<13>Jan  1 00:00:00 a.jail.rex.internal forger: claim-2-{token}",
        "a (RFC 5424)": f"<13>1 2026-01-01T00:00:00Z a forger - - - claim-3-{token}",
        "_unknown": f"<13>Jan  1 00:00:00 _unknown forger: claim-4-{token}",
        "absolute path": f"<13>Jan  1 00:00:00 /tmp/escaped-{token} forger: claim-5-{token}",
        "climbing path": f"<13>Jan  1 00:00:00 {'../' * 20}tmp/escaped-{token} forger: "
        f"claim-6-{token}",
        "path to a's file": f"<13>Jan  1 00:00:00 ../jails/a forger: claim-7-{token}",
        "a's address": f"<13>Jan  1 00:00:00 {rex.ip_of('a')} forger: claim-8-{token}",
    }
    send_from(rex, "b", *(c.encode() for c in claims.values()))
    newline = b"<13>Jan  1 00:00:00 b forger: one line\nJan  1 00:00:00 a forged: second line"
    send_from(rex, "b", newline)
    out = wait_for(rex, "b", "second line")
    for n in range(1, len(claims) + 1):  # filed under b, whatever it claims
        wait_for(rex, "b", f"claim-{n}-{token}")
    assert "forger: one line#012Jan  1 00:00:00 a forged: second line" in out  # one line
    a_log = rex.run("logs", "a").stdout
    assert token not in a_log and "forger" not in a_log
    assert {p.name for p in collected.logs.iterdir()} == {"a.log", "b.log"}
    assert not list(Path("/tmp").glob(f"escaped-{token}*"))
    assert not [f for _, _, files in os.walk(tmp_path) for f in files if "escaped" in f]
    # the host itself is no jail: its messages go to _unknown.log
    rex.in_netns("logger", "-d", "-n", HOST, "-P", "514", "-t", "hostside", "not a jail")
    deadline = time.monotonic() + 10
    while not (collected.logs / "_unknown.log").exists():
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert token not in (collected.logs / "_unknown.log").read_text()


FLOOD = 100_000
PAD = "x" * 80  # each line is about 150 bytes in the file: about 15 MB unbounded


def sizes(logs: Path, jail: str) -> tuple[int, int]:
    def size(p: Path) -> int:
        try:
            return p.stat().st_size
        except FileNotFoundError:
            return 0

    return size(logs / f"{jail}.log"), size(logs / f"{jail}.log.1")


def settle(logs: Path, jail: str) -> tuple[int, int]:
    """The sizes once the collector has written everything it got."""
    last, stable = sizes(logs, jail), time.monotonic()
    while time.monotonic() - stable < 1.5:
        time.sleep(0.1)
        now = sizes(logs, jail)
        if now != last:
            last, stable = now, time.monotonic()
    return last


def test_a_flooding_jail_stays_within_its_bound_and_others_still_log(
    rex: Rex, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    bound = 256 << 10
    slack = 64 << 10  # rsyslog finishes the batch it writes (at most a few KiB)
    rex.env.update({"REX_LOG_MAX_SIZE": str(bound), "REX_LOG_RATE_LIMIT": "0"})
    paths = request.getfixturevalue("collected")
    logs = paths.logs
    assert f'rotation.sizeLimit="{bound}"' in paths.conf.read_text()
    rex.run("up", write_rex(tmp_path, "a"))
    rex.run("up", write_rex(tmp_path, "b"))
    rex.run("exec", "b", "--", "logger", "-t", "calm", "before the flood")
    wait_for(rex, "b", "calm: before the flood")
    flood = rex.popen(
        "exec", "a", "--", "/bin/sh", "-c", f"seq 1 {FLOOD} | sed 's/$/ {PAD}/' | logger -t flood"
    )
    largest, sent = 0, 0
    while flood.poll() is None:
        largest = max(largest, *sizes(logs, "a"))
        rex.run("exec", "b", "--", "logger", "-t", "calm", "during the flood")
        sent += 1
        time.sleep(0.2)
    assert flood.returncode == 0, flood.stderr.read() if flood.stderr else ""
    rex.run("exec", "b", "--", "logger", "-t", "calm", "after the flood")
    wait_for(rex, "b", "calm: after the flood")
    current, rotated = settle(logs, "a")
    assert max(largest, current, rotated) <= bound + slack, (largest, current, rotated)
    assert rotated > bound // 2 and "flood:" in (logs / "a.log.1").read_text()  # it did rotate
    assert "calm" not in (logs / "a.log").read_text() + (logs / "a.log.1").read_text()
    assert sorted(p.name for p in logs.iterdir()) == ["a.log", "a.log.1", "b.log"]
    assert (logs / "a.log").stat().st_mode & 0o777 == 0o640  # also the file made at rotation
    assert "flood:" not in rex.run("logs", "b").stdout
    during = rex.run("logs", "b").stdout.count("calm: during the flood")
    print(f"flood: largest file {largest} B (bound {bound}); b's lines during it: {during}/{sent}")


def test_the_collectors_rate_limit_drops_a_flood_and_lets_later_lines_in(
    rex: Rex, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    burst, seconds = 2000, 2
    rex.env.update({"REX_LOG_MAX_SIZE": "0", "REX_LOG_RATE_LIMIT": f"{burst}/{seconds}"})
    logs = request.getfixturevalue("collected").logs
    rex.run("up", write_rex(tmp_path, "a"))
    rex.run("up", write_rex(tmp_path, "b"))
    started = time.monotonic()
    rex.run("exec", "a", "--", "/bin/sh", "-c", "seq 1 20000 | logger -t flood")
    windows = int((time.monotonic() - started) / seconds) + 2
    settle(logs, "a")
    lines = (logs / "a.log").read_text().count("flood:")
    assert 0 < lines <= burst * windows, (lines, windows)
    time.sleep(seconds + 0.5)  # a new interval: the budget is back
    rex.run("exec", "b", "--", "logger", "-t", "calm", "after the flood")
    wait_for(rex, "b", "calm: after the flood")


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
