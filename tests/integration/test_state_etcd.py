"""The store contract of tests/unit/test_state.py on a real etcd (127.0.0.1),
then what only etcd has: the key prefix, leases, watches with resume and
compaction, endpoint failover. No root needed: only the etcd binary."""

from __future__ import annotations

import ipaddress
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from rexcarcer import ipam
from rexcarcer.state.base import Put, Store, create_json
from rexcarcer.state.etcd import EtcdStore
from rexcarcer.state.gateway import EtcdUnavailable, b64
from rexcarcer.state.lease import LeaseKeeper
from rexcarcer.state.watch import Kind, Update, apply
from tests.capability import linux_only
from tests.etcd_support import EtcdCluster, free_port, local_cluster, require_etcd
from tests.integration.conftest import wait_until

# the same test bodies as for SQLite and the memory store
from tests.unit.test_state import (  # noqa: F401
    test_create_if_absent_and_compare_and_swap,
    test_failed_compare_changes_nothing,
    test_ipam_allocates_lowest_free_and_skips_the_host_address,
    test_ipam_fixed_address_claims,
    test_prefix_listing_is_sorted_and_exact,
)


@pytest.fixture(autouse=True)
def _linux_only() -> None:
    linux_only("etcd-server is installed from Debian; the FreeBSD CI installs no etcd")


@pytest.fixture(scope="module")
def etcd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdCluster]:
    require_etcd()
    cluster = local_cluster(tmp_path_factory.mktemp("etcd"))
    cluster.start()
    try:
        cluster.wait_healthy()
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def store(etcd: EtcdCluster, request: pytest.FixtureRequest) -> Iterator[Store]:
    # each test its own prefix: tests share the member
    s = EtcdStore(etcd.endpoints, prefix=f"/rexcarcer-test/{request.node.name}/")
    yield s
    s.close()


def _raw_keys(etcd: EtcdCluster, prefix: str) -> list[str]:
    import base64

    from rexcarcer.state.gateway import prefix_end

    body = {"key": b64(prefix), "range_end": prefix_end(prefix), "keys_only": True}
    kvs = httpx.post(f"{etcd.endpoints[0]}/v3/kv/range", json=body).json().get("kvs", [])
    return [base64.b64decode(kv["key"]).decode() for kv in kvs]


def test_keys_live_under_rexcarcer_v1(etcd: EtcdCluster) -> None:
    s = EtcdStore(etcd.endpoints)
    assert create_json(s, "jails/web", {"n": 1})
    assert "/rexcarcer/v1/jails/web" in _raw_keys(etcd, "/rexcarcer/v1/")
    entry = s.get("jails/web")
    assert entry is not None and entry.key == "jails/web" and entry.revision > 0
    s.commit([], [])  # an empty transaction is fine
    s.close()


def test_allocation_is_atomic_across_clients(store: Store, etcd: EtcdCluster) -> None:
    net = ipaddress.ip_network("203.0.113.0/26")
    prefix = store.prefix  # type: ignore[attr-defined]
    got: list[str] = []

    def grab(n: int) -> None:
        s = EtcdStore(etcd.endpoints, prefix=prefix)
        got.extend(str(ipam.allocate(s, net, f"p{n}-{i}")) for i in range(5))
        s.close()

    threads = [threading.Thread(target=grab, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(got) == 40 and len(set(got)) == 40


def test_lease_keeper_keeps_and_reregisters(store: EtcdStore) -> None:
    keeper = LeaseKeeper(store, 2, {"hosts/h1/alive": "1"})
    keeper.start()
    try:
        # there all along, for twice the TTL: the keep-alives at TTL/3 carry it
        until = time.monotonic() + 2 * keeper.ttl
        while time.monotonic() < until:
            assert store.get("hosts/h1/alive") is not None, "the key expired while kept"
            time.sleep(0.1)
        store.revoke(keeper.lease)  # as if it had expired while cut off
        assert store.get("hosts/h1/alive") is None
        # (bounds below only keep a broken run from hanging: no claim about speed)
        wait_until(lambda: store.get("hosts/h1/alive"), "the keeper registering again")
        assert keeper.registrations == 2
    finally:
        keeper.stop()
    lease = keeper.lease
    wait_until(lambda: store.get("hosts/h1/alive") is None, "the key going with its lease")
    assert store.keepalive(lease) == 0


def _collect(store: EtcdStore, prefix: str, n: int, idle: float = 0.5) -> list[Update]:
    out: list[Update] = []
    stop = threading.Event()
    watch = store.watch(prefix, idle=idle)

    def run() -> None:
        for update in watch.updates(stop):
            if update.kind is not Kind.IDLE:
                out.append(update)
            if len(out) >= n:
                stop.set()

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(timeout=10)
    stop.set()
    return out


def test_watch_reset_then_changes(store: EtcdStore) -> None:
    store.commit([], [Put("jails/a", "1")])
    stop = threading.Event()
    view: dict[str, object] = {}
    updates = store.watch("jails/", idle=0.3).updates(stop)
    first = next(updates)
    assert first.kind is Kind.RESET and [e.key for e in first.entries] == ["jails/a"]
    store.commit([], [Put("jails/b", "2"), Put("other/x", "3")])
    store.commit([], [Put("jails/a", "4")])
    from rexcarcer.state.base import Delete

    store.commit([], [Delete("jails/b")])
    seen: list[tuple[str, str | None]] = []
    for update in updates:
        apply(view, update)  # type: ignore[arg-type]
        seen += [(e.key, e.value) for e in update.events]
        if len(seen) >= 3:
            break
    stop.set()
    assert seen == [("jails/b", "2"), ("jails/a", "4"), ("jails/b", None)]
    assert sorted(view) == ["jails/a"]


def test_watch_resumes_across_idle_reconnects(store: EtcdStore) -> None:
    stop = threading.Event()
    watch = store.watch("svc/", idle=0.2)
    updates = watch.updates(stop)
    assert next(updates).kind is Kind.RESET
    assert next(updates).kind is Kind.IDLE  # the stream went quiet and reopens
    store.commit([], [Put("svc/a", "1")])
    got = next(u for u in updates if u.kind is Kind.CHANGES)
    stop.set()
    assert [e.key for e in got.events] == ["svc/a"]


def test_watch_resyncs_after_compaction(store: EtcdStore) -> None:
    stop = threading.Event()
    watch = store.watch("c/", idle=0.3)
    updates = watch.updates(stop)
    assert next(updates).kind is Kind.RESET
    watch.revision = 1  # as if it had been disconnected since revision 1
    store.commit([], [Put("c/a", "1")])
    _, now = store.snapshot("c/")
    store.compact(now)
    update = next(u for u in updates if u.kind is not Kind.IDLE)
    stop.set()
    assert update.kind is Kind.RESET and [e.key for e in update.entries] == ["c/a"]
    assert watch.resets == 1


def test_failover_to_the_next_endpoint(etcd: EtcdCluster) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    s = EtcdStore([dead, *etcd.endpoints], prefix="/rexcarcer-test/failover/")
    assert s.commit([], [Put("k", "v")])
    assert s.get("k") is not None and s.gateway.current == 1
    s.close()


def test_no_endpoint_is_a_clear_error(tmp_path: Path) -> None:
    s = EtcdStore([f"http://127.0.0.1:{free_port()}"], retry_for=0.3)
    with pytest.raises(EtcdUnavailable, match="no etcd endpoint answered") as err:
        s.get("x")
    assert err.value.hint and "REX_ETCD" in err.value.hint
    s.close()
