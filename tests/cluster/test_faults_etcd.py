"""etcd faults on the three-host test bed (conftest.py), with an agent and
rex's unbound on every host.

1. Two of the three members stopped (by PID): the cluster has no quorum. A
   `rex up` of a new jail fails with exit 35 (EtcdUnavailable) within a bounded
   time and leaves nothing on its host (no dataset, network namespace, record,
   address or DNS name); a running jail keeps serving, and every host's unbound
   keeps answering its name from what its agent last saw. With the members
   back, the same `rex up` works.
2. A snapshot (`etcdctl snapshot save`), then a jail created (X) and one
   destroyed (Y); every member stopped and restored from the snapshot into a
   new data directory (`etcdctl snapshot restore`: etcd 3.4 has no etcdutl),
   the cluster started again. The agents notice that the store went back,
   X's host puts X's keys back (it exists) and removes Y's (it does not):
   `rex ls` and DNS on every host show X and not Y.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.capability import require_tools
from tests.cluster.conftest import ClusterHost, Testbed, stop
from tests.cluster.test_cluster import _dig, _serve_dns, _stop_dns
from tests.integration.conftest import copy_example, sh, wait_until

ETCD_UNAVAILABLE = 35
# the store retries a round of every endpoint for 5 s (state/gateway.py), plus
# Python's start and the agent's work on a busy machine
BOUND = 30.0
ZONE = "jail.rex.internal"


@pytest.fixture(scope="module")
def served(
    zfs_hosts: list[ClusterHost], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[list[ClusterHost]]:
    """Every host with its unbound, its agent and a jail: run1 (a web server) on
    h1, run2 and run3 on the others (their bridges carry the resolvers' address)."""
    require_tools("unbound", "dig")
    for h in zfs_hosts:
        _serve_dns(h)
    agents = [h.popen("agent", "--lease-ttl", "2", "--idle", "1") for h in zfs_hosts]
    src = copy_example(tmp_path_factory.mktemp("served"))
    try:
        for h in zfs_hosts:
            rexfile = "hello.rex" if h.name == "h1" else "client.rex"
            h.rex("up", src / rexfile, "--name", f"run{h.name[1:]}", "--host", h.name)
        yield zfs_hosts
    finally:
        for h in zfs_hosts:
            h.rex("destroy", f"run{h.name[1:]}", check=False)
        for a in agents:
            stop(a)
        for h in zfs_hosts:
            _stop_dns(h)


def etcd_keys(h: ClusterHost, prefix: str) -> dict[str, str]:
    done = h.ns("env", "ETCDCTL_API=3", "etcdctl", f"--endpoints={h.endpoints[0]}",
                "get", "--prefix", f"/rexcarcer/v1/{prefix}")  # fmt: skip
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    return dict(zip(lines[::2], lines[1::2], strict=True))


def ip_of(h: ClusterHost, name: str) -> str:
    listed = {j["name"]: j for j in json.loads(h.rex("-o", "json", "ls").stdout)}
    return str(listed[name]["ips"][0]).split("/")[0]


# where each host's unbound listens: its own address in its jail subnet (the
# subnets conftest.py's hosts get, in the order they join), on the bridge a
# first jail makes: every host runs one here
RESOLVER = {"h1": "203.0.113.1", "h2": "203.0.113.65", "h3": "203.0.113.129"}


def resolves(hosts: list[ClusterHost], name: str, ip: str) -> bool:
    """Every host's unbound answers ``name`` with ``ip`` ("": no answer)."""
    return all(_dig(h, RESOLVER[h.name], f"{name}.{ZONE}") == ip for h in hosts)


def diagnose(hosts: list[ClusterHost], name: str, ip: str) -> str:
    out = [f"{name} should be {ip!r}"]
    for h in hosts:
        full = h.ns("dig", "+time=1", "+tries=1", f"@{RESOLVER[h.name]}", f"{name}.{ZONE}")
        log = "\n".join(line for line in (h.root / "agent.log").read_text().splitlines()
                        if not line.startswith("firewall:"))[-2000:]  # fmt: skip
        out.append(f"--- {h.name}: {full.stdout[-800:]}{full.stderr}\n{log}")
    return "\n".join(out)


def await_dns(hosts: list[ClusterHost], want: dict[str, str], what: str) -> None:
    """Until every host's unbound answers each name in ``want`` with its address."""
    try:
        wait_until(lambda: all(resolves(hosts, n, ip) for n, ip in want.items()), what)
    except AssertionError:
        raise AssertionError("\n".join(diagnose(hosts, n, ip) for n, ip in want.items())) from None


def test_lost_quorum_fails_writes_cleanly_and_jails_and_dns_go_on(
    served: list[ClusterHost], testbed: Testbed, tmp_path: Path
) -> None:
    h1 = served[0]
    src = copy_example(tmp_path)
    ip = ip_of(h1, "run1")
    await_dns(served, {"run1": ip}, "run1 resolving on every host")
    lost = testbed.etcd.members[1:]
    for m in lost:
        m.stop()
    try:
        t0 = time.monotonic()
        done = h1.rex("up", src / "hello.rex", "--name", "q1", "--host", "h1", check=False)
        secs = time.monotonic() - t0
        print(f"rex up without quorum: exit {done.returncode} in {secs:.1f} s\n{done.stderr}")
        assert done.returncode == ETCD_UNAVAILABLE, (done.returncode, done.stderr)
        assert "etcd" in done.stderr and "hint:" in done.stderr, done.stderr
        assert secs < BOUND, secs
        t0 = time.monotonic()
        listing = h1.rex("-o", "json", "ls", check=False)
        secs = time.monotonic() - t0
        print(f"rex ls without quorum: exit {listing.returncode} in {secs:.1f} s")
        assert listing.returncode in (0, ETCD_UNAVAILABLE), listing.stderr
        assert secs < BOUND, secs
        # nothing of q1 on h1
        assert sh("zfs", "list", f"{h1.dataset}/jails/q1", check=False).returncode != 0
        assert "-q1" not in sh("ip", "netns", "list").stdout
        # the running jail serves, and every host's unbound still answers its name
        page = h1.ns("/bin/busybox", "wget", "-qO-", f"http://{ip}/").stdout
        assert "hello from a RexCarcer jail" in page, page
        for h in served:
            assert _dig(h, RESOLVER[h.name], f"run1.{ZONE}") == ip, h.name
            assert _dig(h, RESOLVER[h.name], f"q1.{ZONE}") == "", h.name
    finally:
        for m in lost:
            m.start(testbed.etcd.initial, state="existing")
        testbed.etcd.wait_healthy()
    left = {k: v for k, v in etcd_keys(h1, "").items() if "q1" in k or '"q1"' in v}
    assert left == {}, left
    h1.rex("up", src / "hello.rex", "--name", "q1", "--host", "h1")
    assert "q1" in json.loads(etcd_keys(h1, "jails/q1")["/rexcarcer/v1/jails/q1"])["name"]
    h1.rex("destroy", "q1")


def test_a_restore_from_a_snapshot_is_reconciled_by_the_agents(
    served: list[ClusterHost], testbed: Testbed, tmp_path: Path
) -> None:
    h1, h2, h3 = served
    src = copy_example(tmp_path)
    h2.rex("up", src / "hello.rex", "--name", "ygone", "--host", "h2")
    y_ip = ip_of(h2, "ygone")
    await_dns(served, {"ygone": y_ip}, "ygone resolving on every host")
    snap = tmp_path / "etcd.snapshot"
    saved = h1.ns("env", "ETCDCTL_API=3", "etcdctl", f"--endpoints={h1.endpoints[0]}",
                  "snapshot", "save", str(snap))  # fmt: skip
    assert saved.returncode == 0, saved.stderr
    h2.rex("up", src / "hello.rex", "--name", "xnew", "--host", "h2")
    x_ip = ip_of(h2, "xnew")
    h2.rex("destroy", "ygone")
    await_dns(served, {"xnew": x_ip, "ygone": ""}, "xnew resolving and ygone gone everywhere")

    testbed.etcd.stop()
    for m in testbed.etcd.members:
        fresh = m.data.parent / f"{m.name}-restored-{time.monotonic_ns()}"
        sh("env", "ETCDCTL_API=3", "etcdctl", "snapshot", "restore", str(snap),
           "--name", m.name, "--initial-cluster", testbed.etcd.initial,
           "--initial-cluster-token", "rex-test", "--initial-advertise-peer-urls", m.peer,
           "--data-dir", str(fresh))  # fmt: skip
        m.data = fresh
    testbed.etcd.start()
    testbed.etcd.wait_healthy()
    t0 = time.monotonic()
    # the restored store has ygone and not xnew, until h2's agent reconciles
    wait_until(lambda: "/rexcarcer/v1/jails/xnew" in etcd_keys(h1, "jails/")
               and "/rexcarcer/v1/jails/ygone" not in etcd_keys(h1, "jails/"),
               "h2's agent putting xnew back and removing ygone")  # fmt: skip
    print(f"records reconciled {time.monotonic() - t0:.1f} s after the restored cluster was up")
    await_dns(served, {"xnew": x_ip, "ygone": ""}, "DNS on every host: xnew, not ygone")
    print(f"DNS reconciled {time.monotonic() - t0:.1f} s after the restored cluster was up")
    listed = {j["name"]: j for j in json.loads(h3.rex("-o", "json", "ls").stdout)}
    assert listed["xnew"]["host"] == "h2" and listed["xnew"]["state"] == "running", listed
    assert "ygone" not in listed, listed
    owners = [json.loads(v).get("jail") for v in etcd_keys(h1, "ipam/").values()]
    assert "ygone" not in owners and owners.count("xnew") == 1, owners
    assert not any("ygone" in k for k in etcd_keys(h1, "dns/")), etcd_keys(h1, "dns/")
    log = (h2.root / "agent.log").read_text()
    assert "exists here but not in the restored store: put back" in log, log[-3000:]
    assert "is in the restored store but not on this host" in log, log[-3000:]
    page = h2.ns("/bin/busybox", "wget", "-qO-", f"http://{x_ip}/").stdout
    assert "hello from a RexCarcer jail" in page, page
    h2.rex("destroy", "xnew")
