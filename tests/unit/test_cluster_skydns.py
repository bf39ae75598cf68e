"""The SkyDNS mirror on the memory store: the layout CoreDNS's etcd plugin
reads, only the leader writes, a dead host's records are deleted, keys rex did
not write are never touched."""

from __future__ import annotations

from rexcarcer.cluster import skydns
from rexcarcer.cluster.skydns import SkyDnsMirror
from rexcarcer.state.base import Delete, put_json
from rexcarcer.state.lease import FakeLeases
from rexcarcer.state.memory import MemoryStore
from tests.unit.test_cluster_agent import cluster, publish, view_of  # noqa: F401  (fixture)


def keys(store: MemoryStore) -> dict[str, dict[str, object]]:
    return {e.key: e.json() for e in store.list("")}


def test_path_reverses_the_labels() -> None:
    assert skydns.path("web1.jail.rex.internal.") == "internal/rex/jail/web1"
    assert skydns.path("66.113.0.203.in-addr.arpa.") == "arpa/in-addr/203/0/113/66"


def test_the_leader_mirrors_every_live_hosts_records(
    cluster: tuple[MemoryStore, FakeLeases],  # noqa: F811
) -> None:
    store, _leases = cluster
    sky = MemoryStore()
    assert SkyDnsMirror(sky, "h2").sync(view_of(store)) is None  # h1 leads
    assert sky.list("") == []
    assert SkyDnsMirror(sky, "h1").sync(view_of(store)) == (len(keys(sky)), 0)
    got = keys(sky)
    assert got["internal/rex/jail/web/web"] == {"host": "203.0.113.2", "ttl": 30, "rexcarcer": "h1"}
    assert got["internal/rex/jail/api/api"]["host"] == "203.0.113.66"
    assert got["internal/rex/svc/api/api"] == {"host": "203.0.113.66", "ttl": 30,
                                               "rexcarcer": "h2"}  # fmt: skip
    assert got["internal/rex/svc/_tcp/_api/api"] == {
        "host": "api.jail.rex.internal.", "port": 80, "priority": 10, "weight": 100,
        "ttl": 30, "rexcarcer": "h2"}  # fmt: skip
    assert got["arpa/in-addr/203/0/113/66/api"]["host"] == "api.jail.rex.internal."
    # nothing changed: nothing written
    assert SkyDnsMirror(sky, "h1").sync(view_of(store)) == (0, 0)


def test_a_dead_hosts_records_go_and_foreign_keys_stay(
    cluster: tuple[MemoryStore, FakeLeases],  # noqa: F811
) -> None:
    store, leases = cluster
    sky = MemoryStore()
    put_json(sky, "com/example/www/x1", {"host": "192.0.2.1"})  # someone else's record
    mirror = SkyDnsMirror(sky, "h1")
    mirror.sync(view_of(store))
    h2_lease = next(lease for lease, ks in leases.keys.items() if any("h2" in k for k in ks))
    leases.expire(h2_lease)
    put, deleted = mirror.sync(view_of(store)) or (0, 0)
    assert put == 0 and deleted > 0
    left = keys(sky)
    assert not [k for k, v in left.items() if v.get("rexcarcer") == "h2"]
    assert "internal/rex/jail/web/web" in left
    assert left["com/example/www/x1"] == {"host": "192.0.2.1"}
    # a destroyed jail's records go too
    publish(store, "web2", "h1", "203.0.113.3")
    mirror.sync(view_of(store))
    assert "internal/rex/jail/web2/web2" in keys(sky)
    store.commit([], [Delete("dns/web2")])
    mirror.sync(view_of(store))
    assert "internal/rex/jail/web2/web2" not in keys(sky)
