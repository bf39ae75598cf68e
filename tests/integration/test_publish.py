"""PUBLISH, public addresses and egress NAT through ``rex up``, for real.

    outside (198.51.100.2/24) ── up1 ═ up0 ── host: the test's rex namespace
                                              up0 198.51.100.1/24, rex0 203.0.113.1/24
                                              ├─ web     (jail subnet) httpd :80, PUBLISH 8080:80
                                              ├─ client  (jail subnet)
                                              └─ public  198.51.100.20/28 (public_ips @up0)

The outside namespace reaches only the host's address 198.51.100.1 (and what
the host answers for on up0): it has no route to the jail subnet. Every link
is made inside namespaces this test makes; rex runs in the harness's own
namespace (conftest.py), where it loads nftables and sets ip_forward.
"""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.integration.conftest import TOKEN, Rex, copy_example, require, sh, wait_until

HOST_UP, OUTSIDE_IP = "198.51.100.1", "198.51.100.2"
HOST_BR = "203.0.113.1"
PUBLIC_IP = "198.51.100.20"

WEB = """BASE busybox
PROVISION COPY index.html /var/www/index.html
PROVISION COPY rc /etc/rc
PUBLISH 8080:80
"""


@dataclass
class World:
    rex: Rex
    outside: str
    tmp: Path

    def get(self, ns: str | None, url: str, timeout: int = 3) -> str | None:
        """The body from namespace ``ns`` (None: the host's), or None."""
        argv = ["timeout", str(timeout), "busybox", "wget", "-qO-", url]
        if ns is None:
            done = self.rex.in_netns(*argv)
        else:
            done = sh("nsenter", f"--net=/run/netns/{ns}", "--", *argv, check=False)
        return done.stdout if done.returncode == 0 else None

    def jail_get(self, jail: str, url: str) -> str | None:
        done = self.rex.run("exec", jail, "--", "timeout", "3", "wget", "-qO-", url, check=False)
        return done.stdout if done.returncode == 0 else None

    def rexfile(self, name: str, text: str) -> Path:
        d = copy_example(self.tmp, "hello") if not (self.tmp / "hello").exists() else (
            self.tmp / "hello")  # fmt: skip
        path = d / f"{name}.rex"
        path.write_text(text)
        return path

    def table(self) -> str:
        return self.rex.in_netns("nft", "list", "table", "inet", "rexcarcer").stdout


@pytest.fixture
def world(rex: Rex, tmp_path: Path) -> Iterator[World]:
    require("root", "namespaces", "busybox-static", "iproute2", "nftables")
    outside = f"{TOKEN}-po{uuid.uuid4().hex[:6]}"
    sh("ip", "netns", "add", outside)
    try:
        sh("ip", "-n", outside, "link", "set", "lo", "up")
        sh("ip", "-n", rex.netns, "link", "add", "up0", "type", "veth", "peer", "name", "up1",
           "netns", outside)  # fmt: skip
        sh("ip", "-n", rex.netns, "addr", "add", f"{HOST_UP}/24", "dev", "up0")
        sh("ip", "-n", rex.netns, "link", "set", "up0", "up")
        sh("ip", "-n", outside, "addr", "add", f"{OUTSIDE_IP}/24", "dev", "up1")
        sh("ip", "-n", outside, "link", "set", "up1", "up")
        rex.env["REX_PUBLIC_IPS"] = "198.51.100.16/28@up0"
        yield World(rex, outside, tmp_path)
    finally:
        sh("ip", "netns", "del", outside, check=False)


def _serve_outside(w: World) -> subprocess.Popen[bytes]:
    www = w.tmp / "outside-www"
    www.mkdir()
    (www / "index.html").write_text("outside\n")
    proc = subprocess.Popen(
        ["nsenter", f"--net=/run/netns/{w.outside}", "--", "busybox", "httpd", "-f", "-p",
         f"{OUTSIDE_IP}:8000", "-h", str(www)],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    wait_until(lambda: w.get(w.outside, f"http://{OUTSIDE_IP}:8000/", 1) == "outside\n"
               or proc.poll() is not None, "the outside httpd")  # fmt: skip
    assert proc.poll() is None
    return proc


def test_a_published_port_answers_from_outside_the_host_and_other_jails(world: World) -> None:
    w, rex = world, world.rex
    rex.run("up", w.rexfile("web", WEB), "--name", "web")
    rex.run("up", w.rexfile("client", "BASE busybox\n"), "--name", "client")
    page = (w.tmp / "hello" / "index.html").read_text()
    published = f"http://{HOST_UP}:8080/"
    assert w.get(w.outside, published) == page
    # an unpublished port of the host, and the jail itself, stay out of reach
    assert w.get(w.outside, f"http://{HOST_UP}:8081/") is None
    assert w.get(w.outside, f"http://{rex.ip_of('web')}:80/") is None
    assert w.get(None, published) == page  # the host itself
    assert w.get(None, f"http://{HOST_BR}:8080/") == page
    # another jail, through the host's address it reaches (it has no route to up0's)
    assert w.jail_get("client", f"http://{HOST_BR}:8080/") == page
    # rex ls shows it
    assert rex.jails()["web"]["publish"] == [
        {"host_port": 8080, "port": 80, "proto": "tcp", "on": None}
    ]
    assert "8080->80/tcp" in rex.run("ls").stdout
    # removed on stop, back on start
    rex.run("stop", "web")
    assert "publish web" not in w.table()
    assert w.get(w.outside, published) is None
    rex.run("start", "web")
    ns = f"rex-{rex.token}-web"
    assert w.get(w.outside, published) == page, (
        w.table(), sh("ip", "-n", ns, "route", check=False).stdout,
        rex.in_netns("ip", "neigh").stdout, rex.in_netns("sysctl", "net.ipv4.ip_forward").stdout,
        w.get(None, published), w.get(None, f"http://{rex.ip_of('web')}:80/"),
    )  # fmt: skip
    # a host that lost its rules (a reboot, a flush) gets them back from the agent
    rex.in_netns("nft", "delete", "table", "inet", "rexcarcer")
    assert w.get(w.outside, published) is None
    sock = Path(f"/tmp/rexp-{uuid.uuid4().hex[:8]}.sock")
    rex.env["REX_AGENT_SOCKET"] = str(sock)
    agent = rex.popen("agent", "--idle", "0.5")
    try:
        wait_until(lambda: "publish web" in w.table() or agent.poll() is not None,
                   "the agent re-applying the published port")  # fmt: skip
        assert agent.poll() is None, agent.communicate()
        assert w.get(w.outside, published) == page
    finally:
        agent.terminate()  # ours, by PID
        agent.wait(timeout=30)
        sock.unlink(missing_ok=True)
        del rex.env["REX_AGENT_SOCKET"]
    # destroyed: gone for good
    rex.run("destroy", "web")
    assert "publish web" not in w.table()
    assert w.get(w.outside, published) is None


def test_a_port_on_one_address_and_bad_publish_lines_are_refused(world: World) -> None:
    w, rex = world, world.rex
    on = WEB.replace("PUBLISH 8080:80", f"PUBLISH 9090:80 ON {HOST_UP}")
    rex.run("up", w.rexfile("web", on), "--name", "web")
    page = (w.tmp / "hello" / "index.html").read_text()
    assert w.get(w.outside, f"http://{HOST_UP}:9090/") == page
    assert w.get(None, f"http://{HOST_BR}:9090/") is None  # not ON that address
    before = (w.table(), sorted(rex.jails()))
    cases = {
        "taken": ("PUBLISH 9090:80", 76, "jail web already publishes tcp port 9090"),
        "low": ("PUBLISH 80:80", 75, "below 1024 and not allowed"),
        "control": ("PUBLISH 7443:80", 75, "control port"),
        "not ours": ("PUBLISH 9191:80 ON 198.51.100.99", 77, "not one of this host's"),
        "range": ("PUBLISH 70000:80", 10, "expected a number from 1 to 65535"),
    }
    for what, (line, code, message) in cases.items():
        done = rex.run("up", w.rexfile("other", f"BASE busybox\n{line}\n"), "--name", "other",
                       check=False)  # fmt: skip
        assert done.returncode == code, (what, done.stderr)
        assert message in done.stderr, (what, done.stderr)
        assert (w.table(), sorted(rex.jails())) == before, what
    # allowed in the configuration, a low port is fine
    rex.env["REX_PUBLISH_ALLOW"] = "80"
    rex.run("up", w.rexfile("low", WEB.replace("8080:80", "80:80")), "--name", "low")
    assert w.get(w.outside, f"http://{HOST_UP}:80/") == page


def test_egress_nat_lets_a_jail_reach_the_outside_only_when_on(world: World) -> None:
    w, rex = world, world.rex
    server = _serve_outside(w)
    url = f"http://{OUTSIDE_IP}:8000/"
    try:
        rex.run("up", w.rexfile("client", "BASE busybox\n"), "--name", "client")
        assert w.jail_get("client", url) is None  # nat off: no route out
        # even with a route (put there by the test, not by rex) and a host that
        # forwards, the outside has no way back to the jail subnet without the
        # masquerade
        ns = f"rex-{rex.token}-client"
        sh("ip", "-n", ns, "route", "add", "default", "via", HOST_BR)
        rex.in_netns("sysctl", "-q", "-w", "net.ipv4.ip_forward=1")
        assert w.jail_get("client", url) is None
        assert "masquerade" not in w.table()
        rex.run("destroy", "client")
        rex.env["REX_NAT"] = "true"
        rex.run("up", w.rexfile("client", "BASE busybox\n"), "--name", "client")
        assert w.jail_get("client", url) == "outside\n"
        assert "masquerade" in w.table()
        doctor = json.loads(rex.run("-o", "json", "doctor", check=False).stdout)
        fw = next(c for c in doctor if c["check"] == "firewall")
        assert fw["ok"] and "egress NAT on" in fw["detail"], fw
    finally:
        server.terminate()  # ours, by PID
        server.wait(timeout=10)


def test_a_public_address_is_reached_from_the_declared_interfaces_network(world: World) -> None:
    w, rex = world, world.rex
    text = WEB.replace("PUBLISH 8080:80\n", f"IP {PUBLIC_IP}/28\n")
    rex.run("up", w.rexfile("public", text), "--name", "public")
    page = (w.tmp / "hello" / "index.html").read_text()
    # the outside asks for the address on its own link: the host answers (proxy ARP)
    assert w.get(w.outside, f"http://{PUBLIC_IP}:80/") == page
    neigh = rex.in_netns("ip", "neigh", "show", "proxy").stdout
    assert f"{PUBLIC_IP} dev up0" in neigh
    rex.run("stop", "public")
    assert w.get(w.outside, f"http://{PUBLIC_IP}:80/") is None
    assert PUBLIC_IP not in rex.in_netns("ip", "neigh", "show", "proxy").stdout
    assert PUBLIC_IP not in rex.in_netns("ip", "route").stdout
