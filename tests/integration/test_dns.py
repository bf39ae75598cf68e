"""Cluster DNS on one host, for real: Debian's unbound started by `rex host serve`
inside the test's network namespace on the bridge address 203.0.113.1, jails
that find each other by name with busybox nslookup and wget, and dnspython
queries from this process through a socket opened in that namespace."""

from __future__ import annotations

import ctypes
import json
import os
import signal
import socket
import sqlite3
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import dns.message
import dns.query
import dns.rcode
import pytest

from rexcarcer.dns.unbound import Unbound
from tests.capability import linux_only, require_tools
from tests.integration.conftest import Rex, copy_example, sh


@pytest.fixture(autouse=True)
def _linux_only() -> None:
    linux_only(
        "`rex host serve` runs Debian's unbound in the test's network namespace; "
        "FreeBSD's local_unbound is set up by `rex host setup` (unit-tested on the model)"
    )


HOST = "203.0.113.1"
ZONE = "rex.internal"
PAGE = "<h1>hello from a RexCarcer jail</h1>"


def _require_unbound() -> None:
    require_tools("unbound", "unbound-checkconf")


def netns_socket(netns: str) -> socket.socket:
    """A UDP socket that lives in ``netns``: made by a thread that entered it
    with setns(2); the socket keeps its namespace after the thread is gone."""
    out: list[socket.socket | BaseException] = []

    def enter() -> None:
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            fd = os.open(f"/run/netns/{netns}", os.O_RDONLY)
            try:
                if libc.setns(fd, 0x40000000) != 0:  # CLONE_NEWNET
                    raise OSError(ctypes.get_errno(), "setns")
            finally:
                os.close(fd)
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.setblocking(False)  # dnspython's timeouts need a non-blocking socket
            out.append(sock)
        except BaseException as exc:
            out.append(exc)

    t = threading.Thread(target=enter)
    t.start()
    t.join()
    if isinstance(out[0], BaseException):
        raise out[0]
    return out[0]


class Dns:
    """Queries to the unbound that `rex host serve` runs in the test's namespace."""

    def __init__(self, rex: Rex) -> None:
        self.rex = rex
        self.sock = netns_socket(rex.netns)

    def ask(self, name: str, rtype: str = "A") -> dns.message.Message:
        query = dns.message.make_query(name, rtype)
        reply = dns.query.udp(query, HOST, timeout=2, sock=self.sock)
        assert isinstance(reply, dns.message.Message)
        return reply

    def answers(self, name: str, rtype: str = "A") -> list[str]:
        reply = self.ask(name, rtype)
        return sorted(rr.to_text() for rrset in reply.answer for rr in rrset)

    def rcode(self, name: str, rtype: str = "A") -> int:
        return int(self.ask(name, rtype).rcode())

    def served(self) -> str:
        """unbound's whole local data, through its control socket."""
        return Unbound(self.rex.root / "unbound" / "control.sock").list_local_data()


@pytest.fixture
def served(rex: Rex) -> Iterator[Dns]:
    _require_unbound()
    yield from _serve(rex)


def _serve(rex: Rex) -> Iterator[Dns]:
    rex.run("host", "serve", "--detach")
    d = Dns(rex)
    try:
        yield d
    finally:
        d.sock.close()
        rex.run("host", "serve", "--stop", check=False)
        for proc in _state(rex).values():  # never leave a daemon behind
            if Path(f"/proc/{proc['pid']}").exists():
                os.kill(proc["pid"], signal.SIGKILL)


def _state(rex: Rex) -> dict[str, dict[str, int]]:
    try:
        data: dict[str, dict[str, int]] = json.loads(
            (rex.root / "unbound" / "serve.json").read_text()
        )
        return data
    except (OSError, ValueError):
        return {}


def _spawn(rex: Rex, *argv: str) -> subprocess.Popen[bytes]:
    """A daemon of the test's own, in the test's namespace (stopped by ``_stop``)."""
    return subprocess.Popen(
        ["nsenter", f"--net=/run/netns/{rex.netns}", "--", *argv],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _rexfile(tmp_path: Path, name: str, *lines: str) -> Path:
    path = tmp_path / f"{name}.rex"
    path.write_text("BASE busybox\n" + "".join(f"{ln}\n" for ln in lines))
    return path


def test_jails_find_each_other_by_name(rex: Rex, served: Dns, tmp_path: Path) -> None:
    ex = copy_example(tmp_path)
    rex.run("up", ex / "hello.rex")
    # no wait, no retry: `rex up` returns after its records are served
    ip = rex.ip_of("hello")
    assert served.answers(f"hello.jail.{ZONE}") == [ip]
    rex.run("up", ex / "client.rex")
    assert served.answers(f"web.svc.{ZONE}") == [ip]
    assert served.answers(f"_web._tcp.svc.{ZONE}", "SRV") == [f"10 100 80 hello.jail.{ZONE}."]
    reverse = ".".join(reversed(ip.split("."))) + ".in-addr.arpa"
    assert served.answers(reverse, "PTR") == [f"hello.jail.{ZONE}."]
    look = rex.run("exec", "client", "--", "nslookup", f"hello.jail.{ZONE}").stdout
    assert f"Address: {ip}" in look, look
    srv = rex.run("exec", "client", "--", "nslookup", "-type=srv", f"_web._tcp.svc.{ZONE}").stdout
    assert f"10 100 80 hello.jail.{ZONE}" in srv, srv
    for url in [f"http://hello.jail.{ZONE}/", f"http://web.svc.{ZONE}/", "http://web/"]:
        page = rex.run("exec", "client", "--", "wget", "-qO-", url).stdout.strip()
        assert page == PAGE, url  # "web" through `search svc.<zone> jail.<zone>`
    listed = rex.json("dns", "ls")
    assert {(r["jail"], r["name"], r["type"]) for r in listed} >= {  # type: ignore[union-attr,index]
        ("hello", f"hello.jail.{ZONE}.", "A"), ("hello", f"_web._tcp.svc.{ZONE}.", "SRV"),
        ("client", f"client.jail.{ZONE}.", "A"),
    }  # fmt: skip


def test_stop_withdraws_within_one_command(rex: Rex, served: Dns, tmp_path: Path) -> None:
    ex = copy_example(tmp_path)
    rex.run("up", ex / "hello.rex")
    rex.run("stop", "hello")
    assert served.rcode(f"hello.jail.{ZONE}") == dns.rcode.NXDOMAIN
    assert served.rcode(f"web.svc.{ZONE}") == dns.rcode.NXDOMAIN
    assert served.rcode(f"_web._tcp.svc.{ZONE}", "SRV") == dns.rcode.NXDOMAIN
    rex.run("start", "hello")
    assert served.answers(f"hello.jail.{ZONE}") == [rex.ip_of("hello")]
    rex.run("destroy", "hello")
    assert "hello.jail" not in served.served()
    assert not (rex.root / "unbound" / "rexcarcer-data.conf").read_text().count("local-data")


def test_two_instances_both_appear_and_one_leaving_keeps_the_other(
    rex: Rex, served: Dns, tmp_path: Path
) -> None:
    ex = copy_example(tmp_path)
    rex.run("up", ex / "hello.rex", "--name", "web1")
    rex.run("up", ex / "hello.rex", "--name", "web2")
    ip1, ip2 = rex.ip_of("web1"), rex.ip_of("web2")
    assert served.answers(f"web.svc.{ZONE}") == sorted([ip1, ip2])
    assert served.answers(f"_web._tcp.svc.{ZONE}", "SRV") == [
        f"10 100 80 web1.jail.{ZONE}.",
        f"10 100 80 web2.jail.{ZONE}.",
    ]
    rex.run("destroy", "web1")
    assert served.answers(f"web.svc.{ZONE}") == [ip2]
    assert served.answers(f"_web._tcp.svc.{ZONE}", "SRV") == [f"10 100 80 web2.jail.{ZONE}."]
    assert served.rcode(f"web1.jail.{ZONE}") == dns.rcode.NXDOMAIN


def _stub_upstream(rex: Rex, tmp_path: Path) -> subprocess.Popen[bytes]:
    """A second unbound on 127.0.0.2 in the namespace, authoritative-ish for
    example.com: the "internet" rex's unbound forwards to."""
    work = tmp_path / "upstream"
    work.mkdir()
    conf = work / "unbound.conf"
    conf.write_text(
        "server:\n    interface: 127.0.0.2\n    port: 53\n    do-daemonize: no\n"
        '    username: ""\n    chroot: ""\n    directory: "' + str(work) + '"\n'
        '    logfile: ""\n    use-syslog: no\n    module-config: "iterator"\n'
        '    access-control: 127.0.0.0/8 allow\n    local-zone: "example.com." static\n'
        '    local-data: "www.example.com. 60 IN A 198.51.100.80"\n'
        '    local-data: "docs.example.com. 60 IN A 198.51.100.99"\n'
    )
    proc = _spawn(rex, "unbound", "-d", "-p", "-c", str(conf))
    deadline = time.monotonic() + 5
    sock = netns_socket(rex.netns)
    try:
        while time.monotonic() < deadline:
            try:
                dns.query.udp(dns.message.make_query("www.example.com", "A"), "127.0.0.2",
                              timeout=0.2, sock=sock)  # fmt: skip
                return proc
            except (OSError, dns.exception.Timeout):
                time.sleep(0.05)
    finally:
        sock.close()
    _stop(proc)
    raise AssertionError("the stub upstream did not start")


def test_hostname_gets_an_exact_record_and_the_parent_still_resolves(
    rex: Rex, tmp_path: Path
) -> None:
    _require_unbound()
    upstream = _stub_upstream(rex, tmp_path)
    rex.env["REX_DNS_FORWARD"] = "127.0.0.2"
    try:
        gen = _serve(rex)
        served = next(gen)
        try:
            rexfile = _rexfile(tmp_path, "docs", "HOSTNAME docs.example.com", "IP 203.0.113.80/24")
            rex.run("up", rexfile)
            reply = served.ask("docs.example.com")
            assert [(rs.ttl, rr.to_text()) for rs in reply.answer for rr in rs] == [
                (300, "203.0.113.80")  # rex's record wins over the upstream's 198.51.100.99
            ]
            assert served.answers("www.example.com") == ["198.51.100.80"]  # forwarded upstream
            assert served.answers(f"docs.jail.{ZONE}") == ["203.0.113.80"]
            other = _rexfile(tmp_path, "other", "HOSTNAME docs.example.com")
            done = rex.run("up", other, check=False)
            assert done.returncode != 0 and "already published by jail 'docs'" in done.stderr
            rex.run("destroy", "docs")
            assert served.answers("docs.example.com") == ["198.51.100.99"]  # upstream again
        finally:
            gen.close()
    finally:
        _stop(upstream)


INJECTIONS = [
    "HOSTNAME a.example.com. 1 IN A 1.2.3.4",
    'HOSTNAME x"; local-zone: "example.com" redirect',
    "HOSTNAME evil.example.com\\\nlocal-data: x",
    "SERVICE web;local-zone PORT 80",
    'SERVICE "web" PORT 80',
    "HOSTNAME 4.3.2.1.in-addr.arpa",
    "HOSTNAME other.jail.rex.internal",
]


def test_injection_attempts_leave_unbound_unchanged(rex: Rex, served: Dns, tmp_path: Path) -> None:
    ex = copy_example(tmp_path)
    rex.run("up", ex / "hello.rex")
    before = served.served()
    for i, line in enumerate(INJECTIONS):
        done = rex.run("up", _rexfile(tmp_path, f"evil{i}", line), check=False)
        assert done.returncode != 0, line
        assert "\nerror: " in "\n" + done.stderr and "Traceback" not in done.stderr, done.stderr
        assert served.served() == before, line
    assert set(rex.jails()) == {"hello"}
    # past the parser: a record edited in the state store is stopped at the DNS layer
    db = sqlite3.connect(rex.root / "state.db")
    row = db.execute("SELECT value FROM kv WHERE key = 'jails/hello'").fetchone()
    rec = json.loads(row[0])
    rec["hostname"] = 'x.example.com. 1 IN A 6.6.6.6\nlocal-zone: "com" redirect'
    with db:
        db.execute("UPDATE kv SET value = ? WHERE key = 'jails/hello'", (json.dumps(rec),))
    db.close()
    rex.run("stop", "hello")
    after_stop = served.served()
    done = rex.run("start", "hello", check=False)
    assert done.returncode != 0 and "HOSTNAME" in done.stderr, done.stderr
    assert served.served() == after_stop
    assert "6.6.6.6" not in (rex.root / "unbound" / "rexcarcer-data.conf").read_text()


def test_names_survive_unbound_restarts_and_reloads(rex: Rex, served: Dns, tmp_path: Path) -> None:
    ex = copy_example(tmp_path)
    rex.run("up", ex / "hello.rex")
    ip = rex.ip_of("hello")
    # 1. unbound dies: `rex host serve` restarts it and re-pushes; no rex command
    old = _state(rex)["unbound"]["pid"]
    os.kill(old, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        pid = _state(rex).get("unbound", {}).get("pid")
        if pid not in (None, old) and _resolves(served, f"hello.jail.{ZONE}", ip):
            break
        time.sleep(0.1)
    else:
        raise AssertionError("unbound was not restarted")
    assert rex.run("dns", "check", "--dry-run").returncode == 0
    # 2. a reload drops the run-time records: the include: file keeps the names
    unbound = Unbound(rex.root / "unbound" / "control.sock")
    unbound.command("reload")
    assert served.answers(f"hello.jail.{ZONE}") == [ip]
    assert served.answers(f"_web._tcp.svc.{ZONE}", "SRV") == [f"10 100 80 hello.jail.{ZONE}."]
    # ... and `rex dns check` notices the reload through the sentinel and repairs
    dry = rex.run("dns", "check", "--dry-run", check=False)
    assert dry.returncode == 1 and "reload or restart" in dry.stdout, dry.stdout
    rex.run("dns", "check")
    assert rex.run("dns", "check", "--dry-run").returncode == 0
    # 3. drift behind rex's back is reported and repaired
    unbound.command(f"local_data_remove web.svc.{ZONE}.")
    unbound.command(f"local_data stray.jail.{ZONE}. 30 IN A 203.0.113.250")
    report = rex.json("dns", "check")
    assert [r["name"] for r in report["missing"]] == [f"web.svc.{ZONE}."]  # type: ignore[index]
    assert [r["name"] for r in report["unexpected"]] == [f"stray.jail.{ZONE}."]  # type: ignore[index]
    assert served.answers(f"web.svc.{ZONE}") == [ip]
    assert served.rcode(f"stray.jail.{ZONE}") == dns.rcode.NXDOMAIN


def test_unbound_started_without_rex_serves_the_persisted_file(rex: Rex, tmp_path: Path) -> None:
    """As under a service manager: plain `unbound -c` with rex's configuration."""
    _require_unbound()
    gen = _serve(rex)
    next(gen)
    ex = copy_example(tmp_path)
    rex.run("up", ex / "hello.rex")
    ip = rex.ip_of("hello")
    gen.close()  # `rex host serve --stop`: unbound is gone
    assert "not published" in rex.run("doctor", check=False).stdout
    proc = _spawn(rex, "unbound", "-d", "-p", "-c", str(rex.root / "unbound" / "unbound.conf"))
    try:
        d = Dns(rex)
        deadline = time.monotonic() + 5
        while not _resolves(d, f"hello.jail.{ZONE}", ip):
            assert time.monotonic() < deadline, "the persisted records were not served"
            time.sleep(0.05)
        assert d.answers(f"web.svc.{ZONE}") == [ip]
        assert "unbound 1.17" in rex.run("doctor", check=False).stdout
        rex.run("dns", "check")  # the sentinel comes back
        assert rex.run("dns", "check", "--dry-run").returncode == 0
        d.sock.close()
    finally:
        _stop(proc)


def _resolves(d: Dns, name: str, ip: str) -> bool:
    try:
        return d.answers(name) == [ip]
    except (OSError, dns.exception.Timeout):
        return False


def test_local_unbound_layout_works_with_a_real_unbound(rex: Rex, tmp_path: Path) -> None:
    """FreeBSD's conf.d files (rendered for local_unbound), included the way
    local-unbound-setup's unbound.conf includes them, served by Debian's unbound."""
    _require_unbound()
    import ipaddress

    from rexcarcer.dns.records import jail_records
    from rexcarcer.dns.services import ServerSettings, render_local_unbound_conf
    from rexcarcer.dns.unbound import write_data_file
    from rexcarcer.model.jail import JailRecord

    work = tmp_path / "var-unbound"
    (work / "conf.d").mkdir(parents=True)
    os.chmod(tmp_path, 0o755)
    s = ServerSettings(ZONE, ipaddress.ip_network("203.0.113.0/24"),
                       ipaddress.ip_address(HOST), 53)  # fmt: skip
    (work / "conf.d" / "rexcarcer.conf").write_text(render_local_unbound_conf(s))
    rec = {"name": "web1", "address": "203.0.113.12/24", "hostname": "docs.example.com",
           "services": [{"name": "web", "port": 80, "proto": "tcp"}]}  # fmt: skip
    records = jail_records(JailRecord.from_json(rec), ZONE)
    write_data_file(work / "conf.d" / "rexcarcer-data.conf", records)
    (work / "unbound.conf").write_text(  # local-unbound-setup's layout, chroot off on Linux
        f'server:\n\tdirectory: {work}\n\tchroot: ""\n\tusername: ""\n\tdo-daemonize: no\n'
        f'\tmodule-config: "iterator"\n\tlogfile: ""\n\tuse-syslog: no\n\n'
        f"remote-control:\n\tcontrol-enable: yes\n\tcontrol-interface: {work}/ctl\n"
        f"\tcontrol-use-cert: no\n\ninclude: {work}/conf.d/*.conf\n"
    )
    assert sh("unbound-checkconf", work / "unbound.conf").returncode == 0
    rex.in_netns("ip", "link", "add", "rex0", "type", "bridge")
    rex.in_netns("ip", "addr", "add", f"{HOST}/24", "dev", "rex0")
    rex.in_netns("ip", "link", "set", "rex0", "up")
    proc = _spawn(rex, "unbound", "-d", "-p", "-c", str(work / "unbound.conf"))
    try:
        d = Dns(rex)
        deadline = time.monotonic() + 5
        while not _resolves(d, f"web1.jail.{ZONE}", "203.0.113.12"):
            assert time.monotonic() < deadline, "local_unbound layout not served"
            time.sleep(0.05)
        assert d.answers("docs.example.com") == ["203.0.113.12"]
        assert d.answers(f"_web._tcp.svc.{ZONE}", "SRV") == [f"10 100 80 web1.jail.{ZONE}."]
        assert d.rcode(f"nope.{ZONE}") == dns.rcode.NXDOMAIN
        assert d.rcode("99.113.0.203.in-addr.arpa", "PTR") == dns.rcode.NXDOMAIN  # static
        d.sock.close()
    finally:
        _stop(proc)
