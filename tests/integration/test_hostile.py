"""A jail is an adversary: real jails and real build steps try to reach what
runs the cluster, and `.rex` files claim what is not theirs.

The host is the test's network namespace (where `rex` runs and loads its
nftables table). Small listeners started there, by PID, stand in for the
agent's API (7443), etcd (2379, 2380), unbound's control port (8953), an
ordinary service (8080), DNS (53, a responder answering every A query with
203.0.113.77) and the log collector (514/udp); each logs who reached it.
"""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from rexcarcer.runtime.linux import veth_name
from rexcarcer.state.base import create_json
from rexcarcer.state.sqlite import SqliteStore
from tests.integration.conftest import Rex, require, sh, wait_until

HOST = "203.0.113.1"
CONTROL = (7443, 2379, 2380, 8953)  # agent API, etcd client and peer, unbound control
OPEN = 8080  # an ordinary port: the guard is no blanket drop
ANSWER = "203.0.113.77"

LISTENERS = r"""
import socket, sys, threading
log = open(sys.argv[1], "a", buffering=1)

def tcp(port):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", port))
    s.listen(64)
    while True:
        c, peer = s.accept()
        log.write(f"tcp {port} {peer[0]}\n")
        c.sendall(f"port-{port}\n".encode())
        c.close()

def dns():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("0.0.0.0", 53))
    while True:
        q, peer = s.recvfrom(512)
        end = 12
        while q[end]:
            end += q[end] + 1
        qtype, end = q[end + 1:end + 3], end + 5
        log.write(f"dns {peer[0]}\n")
        a = qtype == b"\x00\x01"  # A: 203.0.113.77; anything else: no answer
        head = q[:2] + b"\x81\x80" + q[4:6] + (b"\x00\x01" if a else b"\x00\x00") + b"\x00" * 4
        rr = b"\xc0\x0c\x00\x01\x00\x01\x00\x00\x00\x3c\x00\x04" + bytes([203, 0, 113, 77])
        s.sendto(head + q[12:end] + (rr if a else b""), peer)

def syslog():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("0.0.0.0", 514))
    while True:
        data, peer = s.recvfrom(4096)
        log.write(f"syslog {peer[0]} {data.decode(errors='replace').strip()}\n")

for port in map(int, sys.argv[2].split(",")):
    threading.Thread(target=tcp, args=(port,), daemon=True).start()
threading.Thread(target=syslog, daemon=True).start()
threading.Thread(target=dns, daemon=True).start()
log.write("ready\n")
threading.Event().wait()
"""

# What a jail (or a build step) tries; `step` also starts a syslogd, which a
# jail already runs (rex's rc.pre), to send its line to the collector.
PROBE = f"""\
for p in {" ".join(map(str, (*CONTROL, 53, OPEN)))}; do
    echo "tcp $1 $p: $(nc -w 2 ${{2:-{HOST}}} $p </dev/null 2>/dev/null | tr -d '\\n')"
done
echo "dns: $(nslookup probe.example 2>&1 | tr '\\n' ' ')"
if [ "$1" = step ]; then
    echo "resolv: $(tr '\\n' ' ' < /etc/resolv.conf)"
    echo "addr: $(ip -o -4 addr show dev eth0)"
    syslogd -n -R {HOST}:514 & sleep 0.5
    logger -t probe "from-the-step"; sleep 0.5; kill $!
else
    logger -t probe "from-the-jail"
fi
"""


@dataclass
class Listeners:
    log: Path
    proc: subprocess.Popen[bytes]

    def seen(self, what: str) -> list[str]:
        return [line for line in self.log.read_text().splitlines() if line.startswith(what)]


@pytest.fixture
def listeners(rex: Rex, tmp_path: Path) -> Iterator[Listeners]:
    require("nftables")
    log = tmp_path / "listeners.log"
    log.touch()
    ports = ",".join(map(str, (*CONTROL, 53, OPEN)))
    proc = subprocess.Popen(["nsenter", f"--net=/run/netns/{rex.netns}", "--", sys.executable,
                             "-c", LISTENERS, str(log), ports],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        wait_until(lambda: "ready" in log.read_text() or proc.poll() is not None, "listeners")
        assert proc.poll() is None, "the listeners did not start"
        # from the host itself (lo) everything answers: the listeners are real
        for port in (*CONTROL, OPEN):
            got = rex.in_netns("busybox", "nc", "-w", "2", "127.0.0.1", str(port)).stdout
            assert got == f"port-{port}\n", (port, got)
        yield Listeners(log, proc)
    finally:
        proc.terminate()  # ours, by PID
        proc.wait(timeout=10)


def _probed(text: str, where: str) -> dict[int, str]:
    """port -> what nc printed, from PROBE's lines for ``where`` (step or jail)."""
    out = {}
    for line in text.splitlines():
        if line.startswith(f"tcp {where} "):
            port, _, got = line[len(f"tcp {where} ") :].partition(":")
            out[int(port)] = got.strip()
    return out


def _assert_guarded(probed: dict[int, str]) -> None:
    for port in CONTROL:
        assert probed[port] == "", f"port {port} answered: {probed[port]!r}"
    assert probed[53] == "port-53"  # DNS over TCP stays open
    assert probed[OPEN] == f"port-{OPEN}"  # and so does everything else of the host


def _jail_ns(rex: Rex, name: str) -> str:
    return f"rex-{rex.token}-{name}"


def test_jails_and_build_steps_cannot_reach_the_host_s_control_ports(
    rex: Rex, listeners: Listeners, tmp_path: Path
) -> None:
    app = tmp_path / "probe"
    app.mkdir()
    (app / "probe.sh").write_text(PROBE)
    (app / "probe.rex").write_text(
        "BASE busybox\nPROVISION COPY probe.sh /probe.sh\n"
        "PROVISION RUN sh /probe.sh step > /probe-step 2>&1\n"
    )
    rex.run("up", app / "probe.rex")

    # the build step ran on a build address of the jail subnet, behind the guard
    step = rex.run("exec", "probe", "--", "cat", "/probe-step").stdout
    _assert_guarded(_probed(step, "step"))
    assert f"Address: {ANSWER}" in step or f"Address 1: {ANSWER}" in step, step
    assert f"resolv: # generated by rex nameserver {HOST} search svc.rex.internal " \
           "jail.rex.internal" in step  # fmt: skip
    assert "inet 203.0.113.2/24" in step, step  # its own address, not the host's
    wait_until(lambda: listeners.seen("syslog 203.0.113.2"), "the step's syslog line")
    assert "from-the-step" in listeners.seen("syslog 203.0.113.2")[0]
    # the build address went back, and the step's namespace with it
    store = SqliteStore(rex.root / "state.db")
    try:
        assert {e.key: e.json()["jail"] for e in store.list("ipam/")} == {
            "ipam/203.0.113.2": "probe"}  # fmt: skip
    finally:
        store.close()
    assert rex.leftovers()["netns"] == [_jail_ns(rex, "probe")]

    # the running jail: the same
    jail = rex.run("exec", "probe", "--", "sh", "/probe.sh", "jail").stdout
    _assert_guarded(_probed(jail, "jail"))
    assert ANSWER in jail
    wait_until(lambda: [s for s in listeners.seen("syslog 203.0.113.2") if "from-the-jail" in s],
               "the jail's syslog line")  # fmt: skip
    # root in the jail cannot change its routes (no net_admin, runtime/jailenter.py) ...
    sh("ip", "-n", rex.netns, "link", "add", "up0", "type", "veth", "peer", "name", "up1")
    sh("ip", "-n", rex.netns, "addr", "add", "198.51.100.1/24", "dev", "up0")
    sh("ip", "-n", rex.netns, "link", "set", "up0", "up")
    denied = rex.run("exec", "probe", "--", "ip", "route", "add", "198.51.100.0/24", "via", HOST,
                     check=False)  # fmt: skip
    assert denied.returncode != 0 and "not permitted" in denied.stderr, denied
    # ... but with a route to another of the host's addresses (added from outside,
    # as if it could), that address is closed too
    sh("ip", "-n", _jail_ns(rex, "probe"), "route", "add", "198.51.100.0/24", "via", HOST)
    other = rex.run("exec", "probe", "--", "sh", "/probe.sh", "jail", "198.51.100.1").stdout
    _assert_guarded(_probed(other, "jail"))
    reached = [t.split() for t in listeners.seen("tcp")]
    assert not [t for t in reached if int(t[1]) in CONTROL and t[2] != "127.0.0.1"], reached

    # it is the guard that closes them: without rex's table the jail gets in ...
    rex.in_netns("nft", "delete", "table", "inet", "rexcarcer")
    assert _probed(rex.run("exec", "probe", "--", "sh", "/probe.sh", "jail").stdout,
                   "jail")[7443] == "port-7443"  # fmt: skip
    # ... until the agent's next tick loads it again
    sock = Path(f"/tmp/rexa-{uuid.uuid4().hex[:8]}.sock")
    rex.env["REX_AGENT_SOCKET"] = str(sock)
    agent = rex.popen("agent", "--idle", "0.5")
    try:
        wait_until(lambda: rex.in_netns("nft", "list", "table", "inet", "rexcarcer").returncode
                   == 0 or agent.poll() is not None, "the agent loading the guard")  # fmt: skip
        assert agent.poll() is None, agent.communicate()
        _assert_guarded(_probed(rex.run("exec", "probe", "--", "sh", "/probe.sh", "jail").stdout,
                                "jail"))  # fmt: skip
    finally:
        agent.terminate()  # ours, by PID
        agent.wait(timeout=30)
        sock.unlink(missing_ok=True)


def _snapshot(rex: Rex) -> tuple[object, ...]:
    """What a refused `rex up` must leave exactly as it was."""
    datasets = sh("zfs", "list", "-H", "-o", "name", "-r", rex.dataset).stdout
    store = SqliteStore(rex.root / "state.db")
    try:
        keys = sorted(e.key for e in store.list(""))
    finally:
        store.close()
    table = rex.in_netns("nft", "-j", "list", "table", "inet", "rexcarcer").stdout
    routes = rex.in_netns("ip", "route").stdout
    return datasets, keys, rex.leftovers()["netns"], table, routes


def test_a_rex_file_claiming_what_is_not_a_jail_s_is_refused_and_creates_nothing(
    rex: Rex, tmp_path: Path
) -> None:
    rex.env["REX_PUBLIC_IPS"] = "198.51.100.0/25@up0"
    # another host of the cluster, as its records say (the store is the cluster's view)
    store = SqliteStore(rex.root / "state.db")
    try:
        create_json(store, "hosts/h2", {"name": "h2", "address": "198.51.100.200",
                                        "subnet": "198.51.100.224/27"})  # fmt: skip
    finally:
        store.close()
    # an address of one of the host's own interfaces, inside the declared range
    sh("ip", "-n", rex.netns, "link", "add", "up0", "type", "veth", "peer", "name", "up1")
    sh("ip", "-n", rex.netns, "addr", "add", "198.51.100.1/25", "dev", "up0")
    (tmp_path / "a.rex").write_text("BASE busybox\n")
    rex.run("up", tmp_path / "a.rex")
    before = _snapshot(rex)
    cases = [
        ("HOSTNAME h1.host.rex.internal", 47, "inside host.rex.internal"),
        ("HOSTNAME a.jail.rex.internal", 47, "only evil.jail.rex.internal"),
        ("HOSTNAME web.svc.rex.internal", 47, "inside svc.rex.internal"),
        ("IP 203.0.113.1/24", 46, "this host's own address in the jail subnet"),
        ("IP 127.0.0.2/8", 46, "loopback"),
        ("IP 169.254.7.7/16", 46, "link-local"),
        ("IP 198.51.100.1/25", 46, "an address of this host"),
        ("IP 198.51.100.200/24", 46, "the address of cluster host h2"),
        ("IP 198.51.100.230/27", 46, "cluster host h2's jail subnet 198.51.100.224/27"),
        ("IP 198.51.100.150/24", 46, "outside this host's jail subnet 203.0.113.0/24 and every"),
    ]
    for line, code, why in cases:
        evil = tmp_path / "evil.rex"
        evil.write_text(f"BASE busybox\nPROVISION RUN touch /built\n{line}\n")
        for verb in ("up", "plan"):
            done = rex.run(verb, evil, check=False)
            assert done.returncode == code, (line, verb, done.stderr)
            assert why in done.stderr and str(evil) in done.stderr, (line, done.stderr)
            assert line.split()[1] in done.stderr
        assert _snapshot(rex) == before, line
    assert list(rex.jails()) == ["a"]


def test_a_declared_public_ip_gets_its_host_route_and_the_guard(
    rex: Rex, listeners: Listeners, tmp_path: Path
) -> None:
    rex.env["REX_PUBLIC_IPS"] = "198.51.100.0/25@up0"
    # the declared interface (a veth pair: no dummy module on every kernel)
    sh("ip", "-n", rex.netns, "link", "add", "up0", "type", "veth", "peer", "name", "up0p")
    (tmp_path / "probe.sh").write_text(PROBE)
    pub = tmp_path / "pub.rex"
    pub.write_text("BASE busybox\nPROVISION COPY probe.sh /probe.sh\nIP 198.51.100.10/25\n")
    rex.run("up", pub)
    route = rex.in_netns("ip", "route", "show", "198.51.100.10").stdout
    # routed to the jail's own veth; the host answers ARP for it on up0
    assert route.split()[:3] == ["198.51.100.10", "dev", veth_name(rex.token, "pub")], route
    assert "198.51.100.10 dev up0" in rex.in_netns("ip", "neigh", "show", "proxy").stdout
    assert rex.in_netns("busybox", "ping", "-c", "1", "-W", "2", "198.51.100.10").returncode == 0
    probed = rex.run("exec", "pub", "--", "sh", "/probe.sh", "jail").stdout
    _assert_guarded(_probed(probed, "jail"))
    assert listeners.seen(f"tcp {OPEN} 198.51.100.10")  # it was the public jail
    rex.run("destroy", "pub")
    assert rex.in_netns("ip", "route", "show", "198.51.100.10").stdout == ""
    # an address outside every declared range: refused, no route
    pub.write_text("BASE busybox\nIP 198.51.100.150/24\n")
    done = rex.run("up", pub, check=False)
    assert done.returncode == 46 and "every public range declared" in done.stderr
    assert "198.51.100.150" not in rex.in_netns("ip", "route").stdout
    # and without a declaration at all
    del rex.env["REX_PUBLIC_IPS"]
    pub.write_text("BASE busybox\nIP 198.51.100.10/25\n")
    done = rex.run("up", pub, check=False)
    assert done.returncode == 46 and "public_ips: none declared" in done.stderr, done.stderr
    assert rex.jails() == {}


def test_the_guard_loaded_by_rex_is_the_one_rex_computes(rex: Rex, tmp_path: Path) -> None:
    """The table a jail start loads: the control ports closed, DNS and syslog open."""
    (tmp_path / "a.rex").write_text("BASE busybox\n")
    rex.run("up", tmp_path / "a.rex")
    table = json.loads(rex.in_netns("nft", "-j", "list", "table", "inet", "rexcarcer").stdout)
    comments = [o["rule"]["comment"] for o in table["nftables"] if "rule" in o]
    assert "guard open DNS udp/53 to the host" in comments
    assert "guard open syslog udp/514 to the host" in comments
    text = rex.in_netns("nft", "list", "table", "inet", "rexcarcer").stdout
    assert "tcp dport { 2379, 2380, 7443, 8953 } drop" in text, text
