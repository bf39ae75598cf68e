"""Cluster figures on the three-host test bed (tests/cluster/conftest.py): run
through ``bench/bench_cluster.py --testbed`` (root: namespaces, zfs-fuse,
unbound, etcd), or ``pytest -q -s bench/cluster_scenarios.py``.

- DNS propagation: ``rex up --host h1`` of a new jail, then the time until its
  name resolves at h2's and h3's unbound (each polled every 2 ms by a resolver
  process already running inside that host's namespace); reported from the
  moment ``rex up`` returned, and ``rex up`` itself;
- ``rex up --host h2`` run on h1, end to end (context over mutual TLS, build
  cached, clone, start, publish);
- a dead host's records withdrawn: h2's agent killed (SIGKILL), until h2's
  jail no longer resolves at h1 (lease TTL 2 s);
- a jail whose init died, started again by its host's agent: SIGKILL to the
  init, until a new init runs (the agent notices at its next idle tick: 1 s
  here, ``--idle`` 5 s by default; nothing in etcd changes when a jail dies).
"""

from __future__ import annotations

import json
import os
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.cluster.conftest import ClusterHost, stop, testbed, zfs_hosts  # noqa: F401
from tests.cluster.test_placement import _same_ca
from tests.conftest import busybox_root, pool  # noqa: F401
from tests.integration.conftest import copy_example

RUNS = int(os.environ.get("REX_BENCH_RUNS", "50"))
UNBOUND = {"h1": "203.0.113.1", "h2": "203.0.113.65", "h3": "203.0.113.129"}

# Runs inside a host's namespace: prints the CLOCK_MONOTONIC time at which NAME
# first resolved (monotonic time is shared by every process of the machine).
POLLER = """
import sys, time, dns.message, dns.query, dns.rcode
name, server = sys.argv[1], sys.argv[2]
print("ready", flush=True)
q = dns.message.make_query(name, "A")
while True:
    try:
        r = dns.query.udp(q, server, timeout=0.5)
        if r.rcode() == dns.rcode.NOERROR and r.answer:
            print(time.monotonic(), flush=True); break
    except Exception:
        pass
    time.sleep(0.002)
"""


# Runs inside h1's namespace: the time the jail's DNS records were published in
# etcd (``dns/<jail>``, written by `rex up` on h1), seen by a watch on h1's member.
PUBLISHED = """
import sys, threading, time
from rexcarcer.state.etcd import EtcdStore
from rexcarcer.state.watch import Kind
store, key, stop = EtcdStore([sys.argv[1]]), "dns/" + sys.argv[2], threading.Event()
for update in store.watch("dns/", idle=1.0).updates(stop):
    if update.kind is Kind.RESET:
        print("ready", flush=True)
    if any(ev.key == key and ev.value is not None for ev in update.events):
        print(time.monotonic(), flush=True); break
"""


def figures(label: str, xs: list[float]) -> str:
    med, worst = statistics.median(xs), max(xs)
    line = f"{label}, n={len(xs)}: median {med * 1000:.0f} ms, worst {worst * 1000:.0f} ms"
    print("BENCH " + line, flush=True)
    return line


def poller(h: ClusterHost, *args: str, script: str = POLLER) -> subprocess.Popen[str]:
    argv = ["nsenter", f"--net=/run/netns/{h.netns}", "--", sys.executable, "-c", script, *args]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    return proc


def resolved_at(proc: subprocess.Popen[str], timeout: float = 30) -> float:
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        stop(proc, signal.SIGKILL)
        raise AssertionError("the name did not resolve") from None
    return float(out.strip())


AGENTS: dict[str, subprocess.Popen[str]] = {}  # the agents this bench started


def start_agent(h: ClusterHost) -> None:
    AGENTS[h.name] = h.popen("agent", "--lease-ttl", "2", "--idle", "1")


@pytest.fixture(scope="module")
def bed(
    zfs_hosts: list[ClusterHost],  # noqa: F811
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[list[ClusterHost]]:
    _same_ca(zfs_hosts)  # shared by `rex cluster init` / `join`
    src = copy_example(tmp_path_factory.mktemp("anchor"))
    for h in zfs_hosts:
        # a jail on each host, as where names are looked up from (its bridge
        # carries the host's jail-subnet address, which unbound serves on)
        h.rex("up", src / "client.rex", "--name", f"anchor-{h.name}", "--host", h.name)
        h.rex("host", "serve", "--detach")
        start_agent(h)
    try:
        time.sleep(1.5)
        yield zfs_hosts
    finally:
        for p in AGENTS.values():
            stop(p)
        for h in zfs_hosts:
            h.rex("host", "serve", "--stop", check=False)
            h.rex("destroy", f"anchor-{h.name}", check=False)


def test_dns_propagation(bed: list[ClusterHost], tmp_path: Path) -> None:
    h1, h2, h3 = bed
    src = copy_example(tmp_path)
    ups, from_start, from_publish = [], [], []
    for i in range(RUNS):
        name = f"prop{i}"
        polls = [poller(h, f"{name}.jail.rex.internal", UNBOUND[h.name]) for h in (h2, h3)]
        published = poller(h1, h1.endpoints[0], name, script=PUBLISHED)
        try:
            t0 = time.monotonic()
            h1.rex("up", src / "client.rex", "--name", name, "--host", "h1")
            ups.append(time.monotonic() - t0)
            resolved = max(resolved_at(p) for p in polls)
            from_start.append(resolved - t0)
            from_publish.append(resolved - resolved_at(published))
        finally:
            for proc in [*polls, published]:
                stop(proc, signal.SIGKILL)  # a no-op once it printed its time
            h1.rex("destroy", name, check=False)
    figures("rex up on h1 (local, cached build), wall time", ups)
    figures("rex up started on h1 -> name resolves at both h2 and h3", from_start)
    figures("dns/<jail> written to etcd -> name resolves at both h2 and h3", from_publish)


def test_up_host_end_to_end(bed: list[ClusterHost], tmp_path: Path) -> None:
    h1, h2, _ = bed
    src = copy_example(tmp_path)
    h1.rex("up", src / "hello.rex", "--name", "warm", "--host", "h2")  # the image is built once
    h2.rex("destroy", "warm")
    took = []
    for i in range(min(RUNS, 20)):
        t0 = time.monotonic()
        info = json.loads(h1.rex("-o", "json", "up", src / "hello.rex", "--name", f"far{i}",
                                 "--host", "h2").stdout)  # fmt: skip
        took.append(time.monotonic() - t0)
        assert info["host"] == "h2"
        h2.rex("destroy", f"far{i}")
    figures("rex up --host h2 run on h1, end to end (cached image)", took)


def test_dead_host_withdrawn(bed: list[ClusterHost], tmp_path: Path) -> None:
    h1, h2, _ = bed
    src = copy_example(tmp_path)
    h2.rex("up", src / "client.rex", "--name", "victim", "--host", "h2")
    out = []
    try:
        for _ in range(3):
            _wait_resolves(h1, "victim", True)
            t0 = time.monotonic()
            stop(AGENTS[h2.name], signal.SIGKILL)
            out.append(_wait_resolves(h1, "victim", False) - t0)
            start_agent(h2)
    finally:
        h2.rex("destroy", "victim", check=False)
    figures("h2's agent killed -> h2's jail gone from h1's DNS (TTL 2 s)", out)


def test_dead_jail_restarted_by_the_agent(bed: list[ClusterHost], tmp_path: Path) -> None:
    h1, h2, _ = bed
    src = copy_example(tmp_path)
    h1.rex("up", src / "client.rex", "--name", "phoenix", "--host", "h2")
    run = h2.root / "run" / "phoenix.json"
    out = []
    try:
        for _ in range(min(RUNS, 10)):
            first = json.loads(run.read_text())["init_pid"]
            t0 = time.monotonic()
            os.kill(first, signal.SIGKILL)  # the init of a jail this bench started
            deadline = t0 + 30
            while True:
                try:
                    pid = json.loads(run.read_text())["init_pid"]
                except (OSError, ValueError, KeyError):
                    pid = first
                # the new init has finished /etc/rc (the runtime's status file
                # says 0): the start is complete, not merely under way
                rc = Path(f"/proc/{pid}/root/dev/.rex-rc")
                if pid != first and rc.exists() and rc.read_text().strip() == "0":
                    break
                if time.monotonic() > deadline:
                    console = h2.root / "run" / "phoenix.console.log"
                    raise AssertionError(
                        "the agent did not start phoenix again:\n"
                        + (h2.root / "agent.log").read_text()[-2000:]
                        + (console.read_text()[-2000:] if console.exists() else "")
                    )
                time.sleep(0.005)
            out.append(time.monotonic() - t0)
            time.sleep(0.5)  # let the agent finish the start (hooks) before the next kill
    finally:
        h2.rex("destroy", "phoenix", check=False)
    figures("jail's init killed on h2 -> running again, started by h2's agent (idle 1 s)", out)


def _wait_resolves(h: ClusterHost, name: str, wanted: bool, timeout: float = 15) -> float:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = h.ns("dig", "+short", "+time=1", "+tries=1", f"@{UNBOUND[h.name]}",
                   f"{name}.jail.rex.internal").stdout.strip()  # fmt: skip
        if bool(got) == wanted:
            return time.monotonic()
        time.sleep(0.02)
    raise AssertionError(f"{name} {'never resolved' if wanted else 'still resolves'}")
