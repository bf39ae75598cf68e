"""The nftables firewall for real, in network namespaces this test makes.

    outside (198.51.100.2) ── up1 ═ up0 ── host (198.51.100.1; rex0 203.0.113.1)
                                              ├─ jail  (203.0.113.5)  httpd :80
                                              └─ jail2 (203.0.113.6)

The host forwards (ip_forward=1 in its namespace only); the jails route
198.51.100.0/24 via 203.0.113.1 and have no default route; the outside has
no route back to 203.0.113.0/24, so only masquerade lets a jail reach it.
NftFirewall runs ``ip netns exec HOST nft ...``. Servers are busybox httpd
(and a small Python UDP echo for syslog's 514/udp, which busybox nc lacks),
started and stopped by PID; every namespace carries the session token.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from rexcarcer.firewall.nft import NftFirewall
from rexcarcer.firewall.rules import Guard, Masquerade, PortForward, Ruleset
from rexcarcer.rexfile.ast import Proto
from rexcarcer.run import SubprocessRunner
from tests.capability import linux_only
from tests.firewall_support import DATA, ip, net, sample_ruleset
from tests.integration.conftest import TOKEN, require, sh


@pytest.fixture(autouse=True)
def _linux_only() -> None:
    linux_only(
        "the nftables driver, checked with traffic between network namespaces (pf is unit-tested)"
    )


JAILS = net("203.0.113.0/24")
HOST_BR, HOST_UP, OUTSIDE_IP = "203.0.113.1", "198.51.100.1", "198.51.100.2"
JAIL_IP, JAIL2_IP = "203.0.113.5", "203.0.113.6"
WEB = PortForward("web", Proto.TCP, 8080, ip(JAIL_IP), 80)

UDP_ECHO = """import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((sys.argv[1], int(sys.argv[2])))
while True:
    data, peer = s.recvfrom(512)
    s.sendto(data, peer)
"""
UDP_ASK = """import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(float(sys.argv[3]))
s.sendto(b"ping", (sys.argv[1], int(sys.argv[2])))
sys.exit(0 if s.recv(512) == b"ping" else 1)
"""


@dataclass
class Topology:
    host: str
    jail: str
    jail2: str
    outside: str
    www: Path
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    logs: dict[tuple[str, int], Path] = field(default_factory=dict)

    @property
    def fw(self) -> NftFirewall:
        return NftFirewall(SubprocessRunner(), argv_prefix=["ip", "netns", "exec", self.host])

    def run(self, ns: str, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return sh("nsenter", f"--net=/run/netns/{ns}", "--", *argv, check=check)

    def bridge_netfilter(self, on: bool) -> bool:
        """With br_netfilter loaded, traffic between two ports of rex0 passes
        the inet hooks and conntrack (net.bridge.bridge-nf-call-iptables, per
        namespace, 1 by default): a reply from one jail to another is then
        un-DNAT'ed on the bridge and the hairpin works without masquerade.
        Off is what a host without br_netfilter does. False: no br_netfilter."""
        knob = "/proc/sys/net/bridge/bridge-nf-call-iptables"
        done = sh("ip", "netns", "exec", self.host, "sh", "-c",
                  f'test -e {knob} && echo {int(on)} > {knob}', check=False)  # fmt: skip
        return done.returncode == 0

    def nft(self, *argv: str) -> str:
        return self.run(self.host, "nft", *argv).stdout

    def get(self, ns: str, url: str, timeout: int = 3) -> str | None:
        """The body, or None when nothing answered in time (busybox wget -T
        crashes in Debian's busybox-static: timeout(1) bounds it instead)."""
        done = self.run(ns, "timeout", str(timeout), "busybox", "wget", "-qO-", url, check=False)
        return done.stdout if done.returncode == 0 else None

    def udp_echo(self, ns: str, addr: str, port: int, timeout: float = 1.0) -> bool:
        asked = self.run(ns, sys.executable, "-c", UDP_ASK, addr, str(port), str(timeout),
                         check=False)  # fmt: skip
        return asked.returncode == 0

    def serve(self, ns: str, *argv: str) -> tuple[subprocess.Popen[bytes], Path]:
        log = self.www / f"server-{len(self.procs)}.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                ["nsenter", f"--net=/run/netns/{ns}", "--", *argv],
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            )  # fmt: skip
        self.procs.append(proc)
        return proc, log

    def httpd(self, ns: str, addr: str, port: int, body: str) -> None:
        root = self.www / f"{ns}-{addr}-{port}"
        root.mkdir()
        (root / "index.html").write_text(body)
        bind = f"{addr}:{port}" if addr else str(port)  # busybox refuses ":80"
        server = self.serve(ns, "busybox", "httpd", "-f", "-v", "-p", bind, "-h", str(root))
        self.logs[ns, port] = server[1]
        url = f"http://{addr or '127.0.0.1'}:{port}/"
        self._wait(server, lambda: self.get(ns, url, 1) == body)

    def last_client(self, ns: str, port: int) -> str:
        """The address the last request to that httpd came from (-v logs
        "[::ffff:ADDR]:PORT: response:200" per request)."""
        log = self.logs[ns, port].read_text()
        peers = re.findall(r"\[(?:::ffff:)?([^\]]+)\]:\d+: response:", log)
        return peers[-1]

    def udp_server(self, ns: str, addr: str, port: int) -> None:
        server = self.serve(ns, sys.executable, "-c", UDP_ECHO, addr, str(port))
        self._wait(server, lambda: self.udp_echo(ns, addr, port, 0.2))

    def _wait(self, server: tuple[subprocess.Popen[bytes], Path], ready: object) -> None:
        assert callable(ready)
        proc, log = server
        deadline = time.monotonic() + 10
        while not ready():
            assert proc.poll() is None, f"{proc.args} exited: {log.read_text()}"
            assert time.monotonic() < deadline, f"{proc.args} did not answer in 10 s"
            time.sleep(0.05)


def _plumb(t: Topology) -> None:
    for ns in (t.host, t.jail, t.jail2, t.outside):
        sh("ip", "netns", "add", ns)
        sh("ip", "-n", ns, "link", "set", "lo", "up")
    # every link is made inside the namespaces, never in the root one
    sh("ip", "-n", t.host, "link", "add", "rex0", "type", "bridge")
    sh("ip", "-n", t.host, "addr", "add", f"{HOST_BR}/24", "dev", "rex0")
    sh("ip", "-n", t.host, "link", "set", "rex0", "up")
    sh("ip", "-n", t.host, "link", "add", "up0", "type", "veth", "peer", "name", "up1",
       "netns", t.outside)  # fmt: skip
    sh("ip", "-n", t.host, "addr", "add", f"{HOST_UP}/24", "dev", "up0")
    sh("ip", "-n", t.host, "link", "set", "up0", "up")
    sh("ip", "-n", t.outside, "addr", "add", f"{OUTSIDE_IP}/24", "dev", "up1")
    sh("ip", "-n", t.outside, "link", "set", "up1", "up")
    for ns, addr, veth in ((t.jail, JAIL_IP, "vj1"), (t.jail2, JAIL2_IP, "vj2")):
        sh("ip", "-n", t.host, "link", "add", veth, "type", "veth", "peer", "name", "eth0",
           "netns", ns)  # fmt: skip
        sh("ip", "-n", t.host, "link", "set", veth, "master", "rex0", "up")
        sh("ip", "-n", ns, "addr", "add", f"{addr}/24", "dev", "eth0")
        sh("ip", "-n", ns, "link", "set", "eth0", "up")
        sh("ip", "-n", ns, "route", "add", "198.51.100.0/24", "via", HOST_BR)
    sh("ip", "netns", "exec", t.host, "sysctl", "-q", "-w", "net.ipv4.ip_forward=1")
    t.bridge_netfilter(False)


@pytest.fixture
def topo(tmp_path: Path) -> Iterator[Topology]:
    require("root", "namespaces", "busybox-static", "iproute2", "nftables")
    n = uuid.uuid4().hex[:6]
    t = Topology(*(f"{TOKEN}-fw{n}-{r}" for r in ("host", "jail", "jail2", "out")), tmp_path)
    try:
        _plumb(t)
        t.httpd(t.jail, "", 80, "jail web\n")
        yield t
    finally:
        for proc in t.procs:
            proc.terminate()
        for proc in t.procs:
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for ns in (t.host, t.jail, t.jail2, t.outside):
            sh("ip", "netns", "del", ns, check=False)


def test_published_port_answers_from_outside_the_host_and_other_jails(topo: Topology) -> None:
    t = topo
    published = f"http://{HOST_UP}:8080/"
    assert t.get(t.outside, published) is None  # nothing published yet
    # a ruleset that knows no jail subnet has no hairpin for jails: the jail
    # answers jail2 directly, from an address jail2 did not call
    assert t.fw.apply(Ruleset((WEB,))) is True
    assert t.get(t.outside, published) == "jail web\n"
    assert t.get(t.jail2, f"http://{HOST_BR}:8080/") is None
    assert t.fw.apply(Ruleset((WEB,), guard=Guard(JAILS, "rex0"))) is True
    assert t.get(t.outside, published) == "jail web\n"
    assert t.last_client(t.jail, 80) == OUTSIDE_IP  # the client's own address
    assert t.get(t.host, published) == "jail web\n"  # the host itself (output + hairpin)
    assert t.last_client(t.jail, 80) == HOST_BR
    assert t.get(t.host, f"http://{HOST_BR}:8080/") == "jail web\n"
    # another jail through the host's published port: DNAT + hairpin masquerade
    assert t.get(t.jail2, f"http://{HOST_BR}:8080/") == "jail web\n"
    assert t.last_client(t.jail, 80) == HOST_BR
    assert t.get(t.jail2, published) == "jail web\n"
    assert t.get(t.jail2, f"http://{JAIL_IP}:80/") == "jail web\n"  # directly: not NATed
    assert t.last_client(t.jail, 80) == JAIL2_IP
    # an unpublished port of the same host does not lead to the jail
    assert t.get(t.outside, f"http://{HOST_UP}:8081/") is None
    if t.bridge_netfilter(True):  # the same with br_netfilter on
        assert t.get(t.jail2, f"http://{HOST_BR}:8080/") == "jail web\n"
        assert t.last_client(t.jail, 80) == HOST_BR
        assert t.get(t.outside, published) == "jail web\n"
        assert t.last_client(t.jail, 80) == OUTSIDE_IP
        t.bridge_netfilter(False)
    # nor does the published port of an address the forward is not ON
    on_up = Ruleset((PortForward("web", Proto.TCP, 8080, ip(JAIL_IP), 80, ip(HOST_UP)),))
    t.fw.apply(on_up)
    assert t.get(t.outside, published) == "jail web\n"
    assert t.get(t.host, f"http://{HOST_BR}:8080/") is None


def test_removing_a_forward_removes_its_rule(topo: Topology) -> None:
    t = topo
    api = PortForward("api", Proto.TCP, 9090, ip(JAIL_IP), 80)
    t.fw.apply(Ruleset((WEB, api)))
    assert t.get(t.outside, f"http://{HOST_UP}:9090/") == "jail web\n"
    assert t.fw.apply(Ruleset((api,))) is True
    assert t.get(t.outside, f"http://{HOST_UP}:8080/") is None
    assert t.get(t.outside, f"http://{HOST_UP}:9090/") == "jail web\n"
    assert t.fw.current() == Ruleset((api,))
    assert "publish web" not in t.nft("list", "table", "inet", "rexcarcer")


def test_masquerade_lets_jails_reach_the_outside(topo: Topology) -> None:
    t = topo
    t.httpd(t.outside, "", 8000, "outside\n")
    url = f"http://{OUTSIDE_IP}:8000/"
    # the outside has no route back to the jail subnet
    assert t.get(t.jail, url) is None
    t.fw.apply(Ruleset(masquerade=Masquerade(JAILS, "up0")))
    assert t.get(t.jail, url) == "outside\n"
    assert t.last_client(t.outside, 8000) == HOST_UP
    # traffic between jails keeps its source, also when br_netfilter shows
    # bridged packets to postrouting
    for br_nf in (False, True):
        if t.bridge_netfilter(br_nf) or not br_nf:
            assert t.get(t.jail2, f"http://{JAIL_IP}:80/") == "jail web\n"
            assert t.last_client(t.jail, 80) == JAIL2_IP
    t.bridge_netfilter(False)
    t.fw.apply(Ruleset(masquerade=Masquerade(JAILS)))  # any interface
    assert t.get(t.jail2, url) == "outside\n"
    t.fw.apply(Ruleset(masquerade=Masquerade(JAILS, "rex0")))  # not the way out
    assert t.get(t.jail, url) is None
    t.fw.apply(Ruleset())
    assert t.get(t.jail, url) is None


def test_guard_closes_control_ports_and_cluster_addresses_but_not_dns_or_syslog(
    topo: Topology,
) -> None:
    t = topo
    t.httpd(t.host, "", 7443, "agent api\n")  # on every address of the host
    t.httpd(t.host, HOST_BR, 53, "dns over tcp\n")
    t.httpd(t.outside, "", 8000, "outside\n")
    t.udp_server(t.host, HOST_BR, 514)
    t.udp_server(t.host, HOST_BR, 9999)
    masq = Masquerade(JAILS, "up0")
    # without the guard the jail reaches all of them
    t.fw.apply(Ruleset((WEB,), masquerade=masq))
    assert t.get(t.jail, f"http://{HOST_BR}:7443/") == "agent api\n"
    assert t.get(t.jail, f"http://{HOST_UP}:7443/") == "agent api\n"
    assert t.get(t.jail, f"http://{OUTSIDE_IP}:8000/") == "outside\n"
    assert t.udp_echo(t.jail, HOST_BR, 9999)

    guard = Guard(JAILS, "rex0", ((Proto.TCP, 7443), (Proto.UDP, 9999)), (ip(OUTSIDE_IP),))
    t.fw.apply(Ruleset((WEB,), masquerade=masq, guard=guard))
    assert t.get(t.jail, f"http://{HOST_BR}:7443/") is None
    assert t.get(t.jail, f"http://{HOST_UP}:7443/") is None  # any host address
    assert not t.udp_echo(t.jail, HOST_BR, 9999)
    assert t.get(t.jail, f"http://{OUTSIDE_IP}:8000/") is None  # a cluster address
    assert t.get(t.jail, f"http://{HOST_BR}:53/") == "dns over tcp\n"
    assert t.udp_echo(t.jail, HOST_BR, 514)  # syslog
    # the host itself still can, also from its address in the jail subnet
    assert t.get(t.host, f"http://{HOST_BR}:7443/") == "agent api\n"
    # a guarded address may still use a jail's published port: the jail's
    # replies belong to a connection it did not open
    assert t.get(t.outside, f"http://{HOST_UP}:8080/") == "jail web\n"


def test_apply_is_idempotent_and_never_touches_another_table(topo: Topology) -> None:
    t = topo
    other = (
        "table inet other {\n chain input {\n  type filter hook input priority 10; policy accept;\n"
        '  tcp dport 2222 counter accept comment "not rex\'s"\n }\n}\n'
    )
    t.run(t.host, "sh", "-c", "printf '%s' \"$0\" | nft -f -", other)
    before = t.nft("-j", "list", "table", "inet", "other")

    rs = sample_ruleset()  # the golden batch, loaded by the real nft
    assert t.fw.apply(rs) is True
    loaded = t.nft("-j", "list", "table", "inet", "rexcarcer")
    assert t.fw.apply(rs) is False  # read back, compared, nothing sent
    assert t.nft("-j", "list", "table", "inet", "rexcarcer") == loaded  # same handles
    assert t.fw.current() == rs
    assert json.loads(loaded)["nftables"][0]["metainfo"]["json_schema_version"] == 1
    assert t.nft("-j", "list", "table", "inet", "other") == before

    # an edit by hand is noticed and replaced
    t.nft("add", "rule", "inet", "rexcarcer", "prerouting", "tcp", "dport", "22", "accept")
    assert t.fw.apply(rs) is True
    assert t.fw.current() == rs

    t.fw.clear()
    t.fw.clear()  # idempotent
    tables = t.nft("list", "tables")
    assert "rexcarcer" not in tables and "table inet other" in tables
    assert t.nft("-j", "list", "table", "inet", "other") == before
    assert t.fw.current() == Ruleset()


def test_a_refused_batch_leaves_the_loaded_table_as_it_was(topo: Topology) -> None:
    t = topo
    t.fw.apply(Ruleset((WEB,)))
    loaded = t.nft("-j", "list", "table", "inet", "rexcarcer")
    # the saved error came from this: a rule for a chain that does not exist
    rule = {"family": "inet", "table": "rexcarcer", "chain": "nosuch", "expr": [{"accept": None}]}
    bad = {"nftables": [{"add": {"rule": rule}}]}
    refused = t.run(t.host, "sh", "-c", 'printf "%s" "$0" | nft -j -f -', json.dumps(bad),
                    check=False)  # fmt: skip
    assert refused.returncode == 1
    assert refused.stderr == (DATA / "nft-apply-error.stderr").read_text()
    assert t.nft("-j", "list", "table", "inet", "rexcarcer") == loaded
    assert t.get(t.outside, f"http://{HOST_UP}:8080/") == "jail web\n"
