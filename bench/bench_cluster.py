"""Cluster store figures on a real 3-member etcd (127.0.0.1, fast election timings).

    .venv/bin/python bench/bench_cluster.py [--runs 50]

Measures:
- write -> watch event across members: a create-if-absent transaction sent to
  member 1, seen by a prefix watch streaming from member 3 (what an agent on
  another host sees when `rex up` publishes a jail); median and worst of N;
- a claim transaction alone (create-if-absent, round trip);
- lease expiry -> DELETE event of the `alive` key at a watcher (how long a dead
  host's records stay in the other hosts' DNS), TTL 2 s, 5 runs;
- failover: the first endpoint down, a read through the second.
No root needed; starts and stops its own etcd members by PID.

    .venv/bin/python bench/bench_cluster.py --testbed [--runs 50]

runs bench/cluster_scenarios.py instead (root: the three-host test bed of
tests/cluster with zfs-fuse, unbound and agents): DNS propagation from `rex up`
on one host to the name resolving on the other two, `rex up --host` end to
end, and a dead host's records withdrawn.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.etcd_support import EtcdCluster, free_port, local_cluster

from rexcarcer.state.base import Compare, Put
from rexcarcer.state.etcd import EtcdStore
from rexcarcer.state.watch import Kind


def ms(xs: list[float]) -> str:
    return f"median {statistics.median(xs) * 1000:.1f} ms, worst {max(xs) * 1000:.1f} ms"


class Watcher:
    """Records when each key first shows up (or goes) in a watch from one member."""

    def __init__(self, endpoint: str, prefix: str) -> None:
        self.store = EtcdStore([endpoint], prefix="/rexcarcer-bench/")
        self.seen: dict[tuple[str, bool], float] = {}
        self.cond = threading.Condition()
        self.stop = threading.Event()
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(prefix,), daemon=True)
        self.thread.start()
        self.ready.wait(10)

    def _run(self, prefix: str) -> None:
        for update in self.store.watch(prefix, idle=1.0).updates(self.stop):
            if update.kind is Kind.RESET:
                self.ready.set()
            now = time.perf_counter()
            with self.cond:
                for ev in update.events:
                    self.seen.setdefault((ev.key, ev.value is None), now)
                self.cond.notify_all()

    def wait(self, key: str, deleted: bool = False, timeout: float = 30) -> float:
        with self.cond:
            self.cond.wait_for(lambda: (key, deleted) in self.seen, timeout)
            return self.seen[(key, deleted)]


def write_to_watch(etcd: EtcdCluster, runs: int) -> tuple[list[float], list[float]]:
    writer = EtcdStore([etcd.endpoints[0]], prefix="/rexcarcer-bench/")
    watcher = Watcher(etcd.endpoints[2], "dns/")
    lat, claim = [], []
    for i in range(runs):
        key = f"dns/j{i}"
        t0 = time.perf_counter()
        assert writer.commit([Compare(key, None)], [Put(key, '{"records":[]}')])
        claim.append(time.perf_counter() - t0)
        lat.append(watcher.wait(key) - t0)
        time.sleep(0.02)
    watcher.stop.set()
    writer.close()
    return lat, claim


def lease_expiry(etcd: EtcdCluster, runs: int = 5, ttl: int = 2) -> list[float]:
    store = EtcdStore([etcd.endpoints[0]], prefix="/rexcarcer-bench/")
    watcher = Watcher(etcd.endpoints[2], "hosts/")
    out = []
    for i in range(runs):
        key = f"hosts/h{i}/alive"
        lease = store.grant(ttl)
        store.put_leased(key, "{}", lease)
        t0 = time.perf_counter()  # the last refresh: the host dies now
        store.keepalive(lease)
        out.append(watcher.wait(key, deleted=True) - t0)
    watcher.stop.set()
    store.close()
    return out


def failover(etcd: EtcdCluster, runs: int = 20) -> list[float]:
    out = []
    for _ in range(runs):
        store = EtcdStore([f"http://127.0.0.1:{free_port()}", *etcd.endpoints],
                          prefix="/rexcarcer-bench/")  # fmt: skip
        t0 = time.perf_counter()
        store.get("dns/j0")
        out.append(time.perf_counter() - t0)
        store.close()
    return out


def testbed(runs: int) -> int:
    import os
    import subprocess

    scenarios = Path(__file__).with_name("cluster_scenarios.py")
    env = {**os.environ, "REX_BENCH_RUNS": str(runs)}
    argv = [sys.executable, "-m", "pytest", "-q", "-s", "-p", "no:cacheprovider", str(scenarios)]
    return subprocess.run(argv, env=env, check=False).returncode


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--testbed", action="store_true", help="the three-host test bed (root)")
    args = parser.parse_args()
    if args.testbed:
        sys.exit(testbed(args.runs))
    with tempfile.TemporaryDirectory() as work:
        etcd = local_cluster(Path(work), size=3)
        etcd.start()
        try:
            etcd.wait_healthy()
            lat, claim = write_to_watch(etcd, args.runs)
            print(f"write (member 1) -> watch event (member 3), n={args.runs}: {ms(lat)}")
            print(f"claim txn (create-if-absent) round trip, n={args.runs}: {ms(claim)}")
            exp = lease_expiry(etcd)
            print(f"lease TTL 2 s: last refresh -> DELETE seen by a watcher, n=5: {ms(exp)}")
            print(f"read with the first endpoint down (failover), n=20: {ms(failover(etcd))}")
        finally:
            etcd.stop()


if __name__ == "__main__":
    main()
