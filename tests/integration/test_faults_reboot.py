"""A host reboot, for real as far as rex can tell (tests/integration/reboot.py).

    outside (198.51.100.2/24) ── up1 ═ up0 ── host: the test's rex namespace
                                              up0 198.51.100.1/24, rex0 203.0.113.1/24
                                              ├─ store  VOLUME data, RESTART no
                                              ├─ api    httpd, DEPENDS store, PUBLISH 8080:80
                                              ├─ fixed  IP 203.0.113.50/24
                                              ├─ pub    httpd, IP 198.51.100.20/28 (public_ips @up0)
                                              └─ off    stopped with `rex stop`

The jailer services (`rex host serve`: unbound and the log collector) and the
agent run as their systemd units would (the agent's ExecStart read from
contrib/systemd). Then the host "reboots": every process rex runs is killed at
once, rex's network namespaces, the host's network namespace (its bridge,
nftables, forwarding), the jails' cgroups and `$REX_ROOT/run` are gone, and the
boot id (REX_BOOT_ID_FILE) is new. The units start again, and nothing else is
done by hand except the uplink, which the OS's own network configuration would
bring back. Every jail that should run is back, in DEPENDS order (api's name
sorts before store's: only DEPENDS puts store first), with its address, its
DNS names, its published port, its public address, its volume's data and its
syslog collected; the stopped one stays stopped; nothing runs twice.
"""

from __future__ import annotations

import json
import re
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import dns.rcode

from tests.capability import linux_only
from tests.integration.conftest import TOKEN, Rex, copy_example, require, sh, wait_until
from tests.integration.reboot import JAILER_ARGV, new_boot, simulate_reboot, unit_argv
from tests.integration.test_dns import ZONE, Dns, _require_unbound
from tests.integration.test_health import started

HOST_UP, OUTSIDE_IP, FIXED = "198.51.100.1", "198.51.100.2", "203.0.113.50"
PUBLIC_IP = "198.51.100.20"
RUNNING = ("api", "fixed", "pub", "store")
WEB = "BASE busybox\nPROVISION COPY index.html /var/www/index.html\nPROVISION COPY rc /etc/rc\n"


def uplink(rex: Rex, outside: str) -> None:
    """The host's uplink to the outside namespace (what the OS configures at boot).
    The old pair goes with the host's old namespace, which the kernel cleans up
    in the background: its outside end is removed now."""
    sh("ip", "-n", outside, "link", "del", "up1", check=False)
    sh("ip", "-n", rex.netns, "link", "add", "up0", "type", "veth", "peer", "name", "up1",
       "netns", outside)  # fmt: skip
    sh("ip", "-n", rex.netns, "addr", "add", f"{HOST_UP}/24", "dev", "up0")
    sh("ip", "-n", rex.netns, "link", "set", "up0", "up")
    sh("ip", "-n", outside, "addr", "add", f"{OUTSIDE_IP}/24", "dev", "up1")
    sh("ip", "-n", outside, "link", "set", "up1", "up")


class Units:
    """`rex host serve` and `rex agent` as rexcarcer-jailer.service and
    rexcarcer-agent.service run them (Type=simple: started, not waited for)."""

    def __init__(self, rex: Rex, log: Path) -> None:
        self.rex, self.log = rex, log
        self.procs: list[subprocess.Popen[bytes]] = []

    def boot(self) -> None:
        with self.log.open("a") as out:
            for argv in (JAILER_ARGV, unit_argv()):
                proc = subprocess.Popen(self.rex.argv(*argv), env=self.rex.env, stdout=out,
                                        stderr=subprocess.STDOUT)  # fmt: skip
                self.procs.append(proc)

    def pids(self) -> list[int]:
        return [p.pid for p in self.procs if p.poll() is None]

    def reap(self) -> None:
        for p in self.procs:
            p.wait(timeout=30)
        self.procs = []

    def stop(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.terminate()
        for p in self.procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        self.procs = []


@contextmanager
def host(rex: Rex, tmp_path: Path) -> Iterator[tuple[Units, str]]:
    require("root", "namespaces", "busybox-static", "iproute2", "nftables")
    _require_unbound()
    boot_file = tmp_path / "boot_id"
    new_boot(boot_file)
    rex.env.update({"REX_TESTING": "1", "REX_BOOT_ID_FILE": str(boot_file),
                    "REX_PUBLIC_IPS": "198.51.100.16/28@up0"})  # fmt: skip
    if len(str(rex.root / "run" / "agent.sock")) > 100:  # sun_path is 108 bytes
        rex.env["REX_AGENT_SOCKET"] = f"/tmp/rexb-{uuid.uuid4().hex[:8]}.sock"
    outside = f"{TOKEN}-ro{uuid.uuid4().hex[:6]}"
    sh("ip", "netns", "add", outside)
    units = Units(rex, tmp_path / "units.log")
    try:
        sh("ip", "-n", outside, "link", "set", "lo", "up")
        uplink(rex, outside)
        units.boot()
        yield units, outside
    finally:
        units.stop()
        sh("ip", "netns", "del", outside, check=False)


def agent_ready(rex: Rex) -> None:
    sock = Path(rex.env.get("REX_AGENT_SOCKET", rex.root / "run" / "agent.sock"))
    wait_until(sock.exists, "the agent's socket")


def dns_ready(rex: Rex) -> Dns:
    d = Dns(rex)
    wait_until(lambda: _answers(d, f"nosuch.jail.{ZONE}") is not None, "unbound answering")
    return d


def _answers(d: Dns, name: str) -> list[str] | None:
    try:
        reply = d.ask(name)
    except Exception:  # a timeout: unbound not up yet
        return None
    if reply.rcode() == dns.rcode.NXDOMAIN:
        return []
    return sorted(rr.to_text() for rrset in reply.answer for rr in rrset)


def inits(rex: Rex) -> dict[str, int]:
    """How many pid-namespace inits (pid 1 of a namespace) each jail's cgroup
    holds: counted from the kernel's view, not from rex's run files."""
    out: dict[str, int] = {}
    parent = Path("/sys/fs/cgroup/pids/rexcarcer") / f"rex-{rex.token}"
    for procs in parent.glob("*/cgroup.procs"):
        for pid in procs.read_text().split():
            try:
                status = Path(f"/proc/{pid}/status").read_text().splitlines()
            except OSError:
                continue
            nspid = next(ln for ln in status if ln.startswith("NSpid:")).split()
            if len(nspid) > 2 and nspid[-1] == "1":
                out[procs.parent.name] = out.get(procs.parent.name, 0) + 1
    return out


def http(ns: str, url: str) -> str | None:
    done = sh("nsenter", f"--net=/run/netns/{ns}", "--", "timeout", "3", "busybox", "wget",
              "-qO-", url, check=False)  # fmt: skip
    return done.stdout if done.returncode == 0 else None


def reachable(rex: Rex, ip: str) -> bool:
    return rex.in_netns("busybox", "ping", "-c", "1", "-W", "1", ip).returncode == 0


def test_the_agent_brings_every_jail_back_after_a_reboot(rex: Rex, tmp_path: Path) -> None:
    linux_only("the reboot is simulated with Linux namespaces, cgroups and /proc")
    web_src = copy_example(tmp_path)
    (web_src / "api.rex").write_text(f"{WEB}SERVICE web PORT 80\nDEPENDS store\nPUBLISH 8080:80\n")
    (web_src / "pub.rex").write_text(f"{WEB}IP {PUBLIC_IP}/28\n")
    page = (web_src / "index.html").read_text()
    files = {
        "store": "BASE busybox\nVOLUME data /srv/data 64M\nRESTART no\n",
        "fixed": f"BASE busybox\nIP {FIXED}/24\n",
        "off": "BASE busybox\n",
    }
    for name, text in files.items():
        (tmp_path / f"{name}.rex").write_text(text)
    with host(rex, tmp_path) as (units, outside):
        try:
            agent_ready(rex)
            rex.run("up", tmp_path / "store.rex")
            rex.run("exec", "store", "--", "sh", "-c", "echo kept > /srv/data/f")
            rex.run("up", web_src / "api.rex")
            rex.run("up", tmp_path / "fixed.rex")
            rex.run("up", web_src / "pub.rex")
            rex.run("up", tmp_path / "off.rex")
            rex.run("stop", "off")
            ips = {n: rex.ip_of(n) for n in RUNNING}
            assert ips["fixed"] == FIXED
            assert all(reachable(rex, ips[n]) for n in RUNNING)
            assert http(outside, f"http://{HOST_UP}:8080/") == page
            assert http(outside, f"http://{PUBLIC_IP}/") == page
            d = dns_ready(rex)  # on the bridge's address: there once a jail started
            assert all(d.answers(f"{n}.jail.{ZONE}") == [ips[n]] for n in RUNNING)
            d.sock.close()
            wait_until(lambda: _logged(rex, "api") == 1, "api's syslog collected")
            before = inits(rex)
            assert before == dict.fromkeys(RUNNING, 1), before

            done = simulate_reboot(rex.root, rex.dataset, started=units.pids(),
                                   boot_file=Path(rex.env["REX_BOOT_ID_FILE"]),
                                   host_netns=rex.netns)  # fmt: skip
            units.reap()
            (tmp_path / "reboot.json").write_text(json.dumps(done.__dict__))
            assert inits(rex) == {}
            assert done.unmounted == []  # rex leaves no mount of its own on the host
            assert sorted(done.netns) == sorted(f"rex-{rex.token}-{n}" for n in RUNNING)
            assert not (rex.root / "run").exists()
            log_at = units.log.stat().st_size

            uplink(rex, outside)  # the OS's network configuration
            units.boot()
            agent_ready(rex)
            try:
                wait_until(lambda: all(rex.jails()[n]["state"] == "running" for n in RUNNING),
                           "every jail that should run running again", timeout=120)  # fmt: skip
                wait_until(lambda: all(f"jails: started {n} " in _since(units.log, log_at)
                                       for n in RUNNING),
                           "the agent's log of every start")  # fmt: skip
                d = dns_ready(rex)
                wait_until(lambda: all(_answers(d, f"{n}.jail.{ZONE}") == [ips[n]]
                                       for n in RUNNING),
                           "every jail's name answering")  # fmt: skip
                wait_until(lambda: http(outside, f"http://{HOST_UP}:8080/") == page,
                           "api's published port from outside")  # fmt: skip
                wait_until(lambda: http(outside, f"http://{PUBLIC_IP}/") == page,
                           "pub's public address from outside")  # fmt: skip
                # each boot's /etc/rc logged through the collector
                wait_until(lambda: _logged(rex, "api") == 2, "api's syslog after the reboot")
            except AssertionError as exc:
                raise AssertionError(_since(units.log, log_at)[-6000:]) from exc
            text = _since(units.log, log_at)
            jails = rex.jails()
            assert jails["off"]["state"] == "stopped"
            assert "jails: started off" not in text
            # the boot is seen as one: store (RESTART no) is started all the same
            starts = {n: text.find(f"jails: started {n} (it has not run since the host booted)")
                      for n in RUNNING}  # fmt: skip
            assert all(at >= 0 for at in starts.values()), text
            assert starts["store"] < starts["api"], text  # DEPENDS store
            assert started(rex, "store") <= started(rex, "api")
            for n in RUNNING:
                assert rex.ip_of(n) == ips[n]
                assert reachable(rex, ips[n]), n
            assert _answers(d, f"off.jail.{ZONE}") == []
            assert d.answers(f"web.svc.{ZONE}") == [ips["api"]]
            d.sock.close()
            # what unbound serves is exactly what rex publishes
            check = rex.run("dns", "check", "--dry-run", check=False)
            assert check.returncode == 0, check.stdout + check.stderr
            got = rex.run("exec", "store", "--", "cat", "/srv/data/f").stdout
            assert got == "kept\n"
            assert jails["api"]["publish"] == [
                {"host_port": 8080, "port": 80, "proto": "tcp", "on": None}
            ]
            # nothing twice: one init, one network namespace per running jail
            assert inits(rex) == dict.fromkeys(RUNNING, 1)
            netns = [n for n in sh("ip", "netns", "list").stdout.split()
                     if n.startswith(f"rex-{rex.token}-")]  # fmt: skip
            assert sorted(netns) == sorted(f"rex-{rex.token}-{n}" for n in RUNNING)
            for n in RUNNING:
                info = json.loads((rex.root / "run" / f"{n}.json").read_text())
                assert re.fullmatch(r"\d+", str(info["init_pid"]))
        finally:
            units.stop()
            for name in ("api", "store", "fixed", "pub", "off"):
                rex.run("destroy", name, check=False)


def _logged(rex: Rex, name: str) -> int:
    """How many times the hello example's /etc/rc logged its start in ``name``."""
    done = rex.run("logs", name, check=False)
    return done.stdout.count("serving /var/www on port 80") if done.returncode == 0 else 0


def _since(log: Path, offset: int) -> str:
    with log.open("rb") as f:
        f.seek(offset)
        return f.read().decode(errors="replace")


def test_a_jail_that_cannot_come_back_leaves_dns(rex: Rex, tmp_path: Path) -> None:
    """After the reboot `broken`'s /etc/rc fails and `late` waits for it
    (DEPENDS): neither runs, so neither name nor service answers (the names
    published in the boot before are withdrawn), and `rex dns check` finds
    unbound in line with the running jails."""
    linux_only("the reboot is simulated with Linux namespaces, cgroups and /proc")
    rc = tmp_path / "rc"
    rc.write_text("#!/bin/sh\n# fails at every boot after the first\n"
                  "if [ -f /var/booted ]; then exit 1; fi\ntouch /var/booted\n")  # fmt: skip
    (tmp_path / "broken.rex").write_text("BASE busybox\nPROVISION COPY rc /etc/rc\n"
                                         "SERVICE db PORT 5432\n")  # fmt: skip
    (tmp_path / "late.rex").write_text("BASE busybox\nDEPENDS broken\nSERVICE web PORT 80\n")
    (tmp_path / "fine.rex").write_text("BASE busybox\n")
    with host(rex, tmp_path) as (units, _):
        try:
            agent_ready(rex)
            for name in ("broken", "late", "fine"):
                rex.run("up", tmp_path / f"{name}.rex")
            ips = {n: rex.ip_of(n) for n in ("broken", "late", "fine")}
            d = dns_ready(rex)
            assert d.answers(f"db.svc.{ZONE}") == [ips["broken"]]
            assert d.answers(f"late.jail.{ZONE}") == [ips["late"]]
            d.sock.close()

            simulate_reboot(rex.root, rex.dataset, started=units.pids(),
                            boot_file=Path(rex.env["REX_BOOT_ID_FILE"]),
                            host_netns=rex.netns)  # fmt: skip
            units.reap()
            log_at = units.log.stat().st_size
            units.boot()
            agent_ready(rex)
            try:
                wait_until(lambda: rex.jails()["fine"]["state"] == "running", "fine running")
                wait_until(lambda: "late waits for broken" in _since(units.log, log_at)
                           and "cannot start broken (attempt 1" in _since(units.log, log_at),
                           "the agent's log of broken failing and late waiting")  # fmt: skip
                # the agent logs the failed start, then takes the earlier boot's
                # records down and says so: the names are checked after that
                wait_until(lambda: all(f"jails: {n} has not run since the host booted" in
                                       _since(units.log, log_at) for n in ("broken", "late")),
                           "the agent's log of their records withdrawn")  # fmt: skip
                d = dns_ready(rex)
                wait_until(lambda: _answers(d, f"fine.jail.{ZONE}") == [ips["fine"]],
                           "fine's name")  # fmt: skip
                gone = ("broken.jail", "late.jail", "db.svc", "web.svc")
                for name in gone:
                    assert _answers(d, f"{name}.{ZONE}") == [], name
                d.sock.close()
            except AssertionError as exc:
                raise AssertionError(_since(units.log, log_at)[-6000:]) from exc
            jails = rex.jails()
            assert jails["broken"]["state"] == "stopped" and jails["late"]["state"] == "stopped"
            check = rex.run("dns", "check", "--dry-run", check=False)
            assert check.returncode == 0, check.stdout + check.stderr
        finally:
            units.stop()
            for name in ("late", "broken", "fine"):
                rex.run("destroy", name, check=False)
