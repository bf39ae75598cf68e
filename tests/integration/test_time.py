"""The time check for real: Debian's chronyd as an NTP server and as a client,
each in a network namespace of the test's own, joined by a veth pair
(203.0.113.1 and .2). Both run with ``-x`` (they never touch the machine's
clock), private configuration, PID file and command socket, and are stopped
by PID. `rex doctor` asks the client through REX_CHRONY_SOCKET."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.capability import require_tools
from tests.integration.conftest import TOKEN, require, sh, wait_until

SERVER = "203.0.113.1"
CLIENT = "203.0.113.2"


@dataclass
class Chrony:
    """The test's chronyd processes and namespaces."""

    work: Path
    server_ns: str
    client_ns: str
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def start(self, name: str, netns: str, conf: str) -> Path:
        """chronyd NAME in NETNS with CONF (plus its private paths); its socket."""
        d = self.work / name
        d.mkdir(mode=0o700)
        sock = d / "chronyd.sock"
        (d / "chrony.conf").write_text(
            f"{conf}\nbindcmdaddress {sock}\ncmdport 0\npidfile {d / 'chronyd.pid'}\n"
        )
        self.procs[name] = subprocess.Popen(
            ["nsenter", f"--net=/run/netns/{netns}", "--",
             "chronyd", "-x", "-d", "-u", "root", "-f", d / "chrony.conf"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=open(d / "log", "wb"),  # noqa: SIM115
        )  # fmt: skip
        wait_until(lambda: sock.exists() or self.procs[name].poll() is not None,
                   f"chronyd {name} up")  # fmt: skip
        assert self.procs[name].poll() is None, (d / "log").read_text()
        return sock

    def stop(self, name: str) -> None:
        proc = self.procs.pop(name)
        proc.terminate()  # ours, by PID
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def doctor(self, sock: Path) -> dict[str, object]:
        """`rex -o json doctor`'s time check, run in the client's namespace."""
        env = {"PATH": os.environ["PATH"], "REX_ROOT": str(self.work / "rex"),
               "REX_RUNTIME": "linux", "REX_CHRONY_SOCKET": str(sock),
               "REX_DATASET": f"{TOKEN}-none/rex"}  # fmt: skip
        done = subprocess.run(
            ["nsenter", f"--net=/run/netns/{self.client_ns}", "--",
             sys.executable, "-m", "rexcarcer", "-o", "json", "doctor"],
            capture_output=True, text=True, env=env, timeout=60,
        )  # fmt: skip
        assert done.returncode in (0, 1), done.stderr  # 1: some check failed
        rows = json.loads(done.stdout)
        check: dict[str, object] = next(r for r in rows if r["check"] == "time")
        return check


@pytest.fixture
def chrony(tmp_path: Path) -> Iterator[Chrony]:
    require("root", "namespaces", "iproute2")
    require_tools("chronyd", "chronyc")
    server_ns, client_ns = f"{TOKEN}-ntps", f"{TOKEN}-ntpc"
    a, b = f"{TOKEN[-6:]}nta", f"{TOKEN[-6:]}ntb"
    c = Chrony(tmp_path, server_ns, client_ns)
    try:
        for ns in (server_ns, client_ns):
            sh("ip", "netns", "add", ns)
            sh("ip", "-n", ns, "link", "set", "lo", "up")
        sh("ip", "-n", server_ns, "link", "add", a, "type", "veth", "peer", "name", b,
           "netns", client_ns)  # fmt: skip
        sh("ip", "-n", server_ns, "addr", "add", f"{SERVER}/24", "dev", a)
        sh("ip", "-n", client_ns, "addr", "add", f"{CLIENT}/24", "dev", b)
        sh("ip", "-n", server_ns, "link", "set", a, "up")
        sh("ip", "-n", client_ns, "link", "set", b, "up")
        yield c
    finally:
        for name in list(c.procs):
            c.stop(name)
        for ns in (server_ns, client_ns):
            sh("ip", "netns", "del", ns, check=False)


def tracking_offset(sock: Path) -> float:
    """chronyc's own System time field: positive when the clock is slow."""
    line = sh("chronyc", "-h", sock, "-c", "tracking").stdout.strip()
    return float(line.split(",")[4])


def test_doctor_reports_the_clients_offset_and_notices_the_server_gone(chrony: Chrony) -> None:
    chrony.start("server", chrony.server_ns, f"local stratum 8\nallow {SERVER}/24")
    sock = chrony.start("client", chrony.client_ns,
                        f"server {SERVER} iburst minpoll -4 maxpoll -4")  # fmt: skip
    check = wait_until(lambda: (c := chrony.doctor(sock))["ok"] and c, "the client synchronised")
    data = check["data"]
    assert isinstance(data, dict)
    assert (data["daemon"], data["source"], data["stratum"]) == ("chronyd", SERVER, 9)
    # the same offset chronyc reports, as "the clock is ahead by" (chronyc: slow by)
    assert isinstance(data["offset"], float)
    assert abs(data["offset"] + tracking_offset(sock)) < 1e-4
    assert f"chronyd synchronised to {SERVER} (stratum 9)" in str(check["detail"])

    chrony.stop("server")
    gone = wait_until(lambda: not (c := chrony.doctor(sock))["ok"] and c, "the loss noticed")
    assert f"lost its sources ({SERVER} unreachable)" in str(gone["detail"])
    # chronyd itself still says "Normal": the selected source is what changed
    assert sh("chronyc", "-h", sock, "-c", "tracking").stdout.strip().endswith(",Normal")


def test_doctor_reports_not_synchronised_when_the_server_never_answers(chrony: Chrony) -> None:
    sock = chrony.start("client", chrony.client_ns,
                        "server 203.0.113.99 iburst minpoll -4 maxpoll -4")  # fmt: skip
    check = chrony.doctor(sock)
    assert check["ok"] is False
    assert "leap status 'Not synchronised'" in str(check["detail"])
    assert "203.0.113.99 unreachable" in str(check["detail"])
    chrony.stop("client")
    gone = chrony.doctor(sock)
    assert gone["ok"] is False and "no time daemon answers" in str(gone["detail"])
