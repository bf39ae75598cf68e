"""Scenarios on the three-host test bed (conftest.py): joining, the same jail
name raced from two hosts, a host whose agent dies, one etcd member stopped."""

from __future__ import annotations

import json
import signal
import subprocess
import threading
from pathlib import Path

from tests.capability import require_tools
from tests.cluster.conftest import ClusterHost, Testbed, stop
from tests.integration.conftest import copy_example, wait_until


def test_hosts_joined_with_distinct_subnets(testbed: Testbed) -> None:
    listed = testbed.hosts[2].hosts()
    assert sorted(listed) == ["h1", "h2", "h3"]
    subnets = {str(h["subnet"]) for h in listed.values()}
    assert subnets == {"203.0.113.0/26", "203.0.113.64/26", "203.0.113.128/26"}
    assert listed["h2"]["address"] == "198.51.100.12"
    conf = (testbed.hosts[0].root / "rexcarcer.toml").read_text()
    assert 'subnet = "203.0.113.0/26"' in conf and "198.51.100.11:2379" in conf


def test_same_jail_name_raced_from_two_hosts(zfs_hosts: list[ClusterHost], tmp_path: Path) -> None:
    h1, h2 = zfs_hosts[0], zfs_hosts[1]
    src = copy_example(tmp_path)
    rexfile = src / "hello.rex"
    results: dict[str, subprocess.CompletedProcess[str]] = {}

    def up(h: ClusterHost) -> None:
        results[h.name] = h.rex("up", rexfile, "--name", "racer", "--host", h.name, check=False)

    threads = [threading.Thread(target=up, args=(h,)) for h in (h1, h2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    winners = [n for n, r in results.items() if r.returncode == 0]
    assert len(winners) == 1, {n: r.stderr for n, r in results.items()}
    loser = results["h2" if winners == ["h1"] else "h1"]
    assert loser.returncode == 12, loser.stderr
    assert "already exists on host" in loser.stderr or "being created" in loser.stderr
    # the loser left nothing behind; its destroy goes to the winner's agent,
    # which does not run here: refused, and the jail stays
    winner = h1 if winners == ["h1"] else h2
    other = h2 if winner is h1 else h1
    refused = other.rex("destroy", "racer", check=False)
    assert refused.returncode == 38 and "agent" in refused.stderr, refused
    listed = {j["name"]: j for j in json.loads(other.rex("-o", "json", "ls").stdout)}
    assert listed["racer"]["host"] == winner.name
    winner.rex("destroy", "racer")


def test_a_host_whose_agent_dies_disappears_and_comes_back(testbed: Testbed) -> None:
    h1, h2 = testbed.hosts[0], testbed.hosts[1]
    a1 = h1.popen("agent", "--lease-ttl", "2", "--idle", "1")
    a2 = h2.popen("agent", "--lease-ttl", "2", "--idle", "1", "--no-routes")
    try:
        wait_until(lambda: h1.hosts()["h2"]["alive"], "h2 alive at h1")
        # h1's agent routes to the other hosts' jail subnets through their addresses
        wait_until(lambda: "203.0.113.64/26 via 198.51.100.12" in h1.ns("ip", "route").stdout,
                   "h1's route to h2's jails")  # fmt: skip
        stop(a2, signal.SIGKILL)
        # the outcome only: how long it takes (lease TTL + a little) is measured by
        # bench/bench_cluster.py (lease expiry) and bench/cluster_scenarios.py
        wait_until(lambda: not h1.hosts()["h2"]["alive"], "h2 dead at h1 once its lease expired")
        a2 = h2.popen("agent", "--lease-ttl", "2", "--idle", "1", "--no-routes")
        wait_until(lambda: h1.hosts()["h2"]["alive"], "h2 alive again at h1")
    finally:
        stop(a1)
        stop(a2)
    assert "203.0.113.64/26" in h1.ns("ip", "route").stdout  # routes outlive the agent


def test_one_etcd_member_stopped_changes_nothing(testbed: Testbed) -> None:
    h1 = testbed.hosts[0]
    member = testbed.etcd.members[0]  # h1's first endpoint
    member.stop()
    try:
        assert sorted(h1.hosts()) == ["h1", "h2", "h3"]
        h1.rex("cluster", "join")  # writes go through too
        done = h1.rex("cluster", "init", "--cidr", "203.0.113.0/24", "--host-prefix", "26")
        assert "already set up" in done.stdout
    finally:
        member.start(testbed.etcd.initial, state="existing")
        testbed.etcd.wait_healthy(member)
    assert sorted(testbed.hosts[2].hosts()) == ["h1", "h2", "h3"]


def _serve_dns(h: ClusterHost) -> None:
    h.rex("host", "serve", "--detach")


def _stop_dns(h: ClusterHost) -> None:
    import os

    h.rex("host", "serve", "--stop", check=False)
    try:
        procs = json.loads((h.root / "unbound" / "serve.json").read_text())
    except (OSError, ValueError):
        return
    for proc in procs.values():  # never leave a daemon of ours behind
        if Path(f"/proc/{proc['pid']}").exists():
            os.kill(proc["pid"], signal.SIGKILL)


def _dig(h: ClusterHost, server: str, name: str, rtype: str = "A") -> str:
    return h.ns("dig", "+short", "+time=1", "+tries=1", f"@{server}", name, rtype).stdout.strip()


def test_a_service_on_host2_resolves_on_host1_until_host2_dies(
    zfs_hosts: list[ClusterHost], tmp_path: Path
) -> None:
    require_tools("unbound", "dig")
    h1, h2 = zfs_hosts[0], zfs_hosts[1]
    _serve_dns(h1)
    _serve_dns(h2)
    a1 = h1.popen("agent", "--lease-ttl", "2", "--idle", "1", "--skydns")
    a2 = h2.popen("agent", "--lease-ttl", "2", "--idle", "1", "--skydns")
    try:
        src = copy_example(tmp_path)
        h1.rex("up", src / "client.rex", "--name", "cli1", "--host", "h1")  # h1's bridge too
        h2.rex("up", src / "hello.rex", "--name", "svc2", "--host", "h2")
        listed = {j["name"]: j for j in json.loads(h2.rex("-o", "json", "ls").stdout)}
        ip = str(listed["svc2"]["ips"][0]).split("/")[0]
        try:
            wait_until(lambda: _dig(h1, "203.0.113.1", "svc2.jail.rex.internal") == ip,
                       "svc2 resolving at h1")  # fmt: skip
        except AssertionError:
            full = h1.ns("dig", "+time=1", "+tries=1", "@203.0.113.1", "svc2.jail.rex.internal")
            raise AssertionError(
                f"{ip=}\n{full.stdout}{full.stderr}\n"
                f"{(h1.root / 'agent.log').read_text()}\n"
                f"{h1.ns('ip', '-br', 'addr').stdout}"
            ) from None
        srv = _dig(h1, "203.0.113.1", "_web._tcp.svc.rex.internal", "SRV")
        assert srv == "10 100 80 svc2.jail.rex.internal.", srv
        assert _dig(h1, "203.0.113.1", "web.svc.rex.internal") == ip
        # the name resolves inside a jail on h1 too (through h1's unbound)
        out = h1.rex("exec", "cli1", "--", "nslookup", "svc2.jail.rex.internal").stdout
        assert ip in out, out
        # and a jail on h1 reaches h2's jail by name: routed h1 jail -> h1 -> h2 -> h2 jail
        wait_until(lambda: "203.0.113.0/26 via 198.51.100.11" in h2.ns("ip", "route").stdout,
                   "h2's route to h1's jails")  # fmt: skip
        # (Debian's busybox-static 1.35 wget crashes with -T: bound it with timeout)
        page = h1.rex("exec", "cli1", "--", "timeout", "10", "wget", "-qO-",
                      "http://svc2.jail.rex.internal/")  # fmt: skip
        assert "hello from a RexCarcer jail" in page.stdout, page
        # the SkyDNS mirror (--skydns), written by h1 (the live host with the lowest name)
        sky = "/skydns/internal/rex/jail/svc2/svc2"
        wait_until(lambda: sky in h2.skydns(), "the SkyDNS mirror of svc2")
        keys = h2.skydns()
        assert keys[sky] == {"host": ip, "ttl": 30, "rexcarcer": "h2"}, keys
        assert keys["/skydns/internal/rex/svc/_tcp/_web/svc2"] == {
            "host": "svc2.jail.rex.internal.", "port": 80, "priority": 10, "weight": 100,
            "ttl": 30, "rexcarcer": "h2"}  # fmt: skip
        ptr = "/skydns/arpa/in-addr/" + ip.replace(".", "/") + "/svc2"
        assert keys[ptr]["host"] == "svc2.jail.rex.internal."

        stop(a2, signal.SIGKILL)
        # gone from h1's resolver once h2's lease expired (how fast: measured by
        # bench/cluster_scenarios.py, with the propagation time)
        wait_until(lambda: _dig(h1, "203.0.113.1", "svc2.jail.rex.internal") == "",
                   "svc2 withdrawn from h1's resolver")  # fmt: skip
        # and from the mirror: h1 deletes a dead host's keys
        wait_until(lambda: not [v for v in h1.skydns().values() if v.get("rexcarcer") == "h2"],
                   "h2's keys gone from the SkyDNS mirror")  # fmt: skip
    finally:
        stop(a1)
        stop(a2)
        h2.rex("destroy", "svc2", check=False)
        h1.rex("destroy", "cli1", check=False)
        _stop_dns(h1)
        _stop_dns(h2)
