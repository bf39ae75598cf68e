"""Cluster membership and planning on the memory store: init, join, subnets,
liveness through leases, leave, the host listing, the config file, and the
cluster-wide jail names of the engine."""

from __future__ import annotations

import ipaddress
import threading
import tomllib
from pathlib import Path

import pytest

from rexcarcer.cluster import ClusterError, hostconf, membership, model
from rexcarcer.config import load_config
from rexcarcer.errors import Conflict
from rexcarcer.state.base import put_json
from rexcarcer.state.lease import FakeLeases, LeaseKeeper
from rexcarcer.state.memory import MemoryStore

CIDR = "203.0.113.0/24"


@pytest.fixture
def store() -> MemoryStore:
    s = MemoryStore()
    membership.init(s, model.make_settings(CIDR, "rex.internal", 26))
    return s


def test_settings_are_validated() -> None:
    with pytest.raises(ClusterError, match="bad cluster CIDR"):
        model.make_settings("203.0.113.1/24", "z", 26)
    with pytest.raises(ClusterError, match="do not fit"):
        model.make_settings(CIDR, "z", 24)
    assert model.make_settings(CIDR, "Rex.Internal.", 27).zone == "rex.internal"


def test_init_is_idempotent_but_refuses_other_settings(store: MemoryStore) -> None:
    same = model.make_settings(CIDR, "rex.internal", 26)
    assert membership.init(store, same) == (same, False)
    with pytest.raises(Conflict, match="other settings"):
        membership.init(store, model.make_settings(CIDR, "other.internal", 26))


def test_join_without_a_cluster_says_what_to_do() -> None:
    with pytest.raises(ClusterError, match="no RexCarcer cluster") as err:
        membership.join(MemoryStore(), None, "h1", "198.51.100.1")
    assert err.value.hint and "rex cluster init" in err.value.hint


def test_hosts_get_distinct_subnets_and_rejoin_keeps_one(store: MemoryStore) -> None:
    a = membership.join(store, None, "h1", "198.51.100.1")
    b = membership.join(store, None, "h2", "198.51.100.2")
    assert [str(a.subnet), str(b.subnet)] == ["203.0.113.0/26", "203.0.113.64/26"]
    assert membership.join(store, None, "h1", "198.51.100.1").subnet == a.subnet
    membership.join(store, None, "h3", "198.51.100.3")
    membership.join(store, None, "h4", "198.51.100.4")
    with pytest.raises(ClusterError, match="no free /26"):
        membership.join(store, None, "h5", "198.51.100.5")


def test_concurrent_joins_never_share_a_subnet(store: MemoryStore) -> None:
    got: list[str] = []
    threads = [
        threading.Thread(target=lambda n=n: got.append(
            str(membership.claim_subnet(store, membership.settings(store), f"h{n}"))))
        for n in range(4)
    ]  # fmt: skip
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(got) == sorted({*got}) and len(got) == 4


def test_bad_host_names_are_refused(store: MemoryStore) -> None:
    for bad in ["", "H1", "a.b", "-x", "x" * 64]:
        with pytest.raises(ClusterError, match="bad host name"):
            membership.join(store, None, bad, "198.51.100.1")


def test_liveness_follows_the_lease(store: MemoryStore) -> None:
    leases = FakeLeases(store)
    membership.join(store, leases, "h1", "198.51.100.1")
    membership.join(store, None, "h2", "198.51.100.2")
    put_json(store, "jails/web", {"name": "web", "host": "h1"})
    listed = {h.name: h for h in membership.list_hosts(store)}
    assert listed["h1"].alive and not listed["h2"].alive
    assert listed["h1"].jails == 1 and listed["h1"].subnet == "203.0.113.0/26"
    assert listed["h1"].as_json()["address"] == "198.51.100.1"
    for lease in list(leases.keys):
        leases.expire(lease)
    assert not any(h.alive for h in membership.list_hosts(store))


def test_a_live_host_name_cannot_be_taken_from_elsewhere(store: MemoryStore) -> None:
    leases = FakeLeases(store)
    membership.join(store, leases, "h1", "198.51.100.1")
    with pytest.raises(Conflict, match="taken by a live host"):
        membership.join(store, leases, "h1", "198.51.100.9")
    for lease in list(leases.keys):
        leases.expire(lease)
    assert membership.join(store, leases, "h1", "198.51.100.9").address == "198.51.100.9"


def test_keeper_reregisters_after_the_lease_is_lost(store: MemoryStore) -> None:
    leases = FakeLeases(store)
    keeper = LeaseKeeper(leases, 3, {"hosts/h1/alive": "{}"})
    first = keeper.register()
    assert keeper.tick() and keeper.lease == first
    leases.expire(first)
    assert store.get("hosts/h1/alive") is None
    assert keeper.tick() and keeper.lease != first and keeper.registrations == 2
    assert store.get("hosts/h1/alive") is not None


def test_leave_refuses_with_jails_then_releases(store: MemoryStore) -> None:
    membership.join(store, FakeLeases(store), "h1", "198.51.100.1")
    put_json(store, "jails/web", {"name": "web", "host": "h1"})
    with pytest.raises(Conflict, match="still has jails: web"):
        membership.leave(store, "h1")
    store.commit([], [])
    removed = membership.leave(store, "h1", force=True)
    assert set(removed) == {"hosts/h1", "hosts/h1/alive", "subnets/203.0.113.0_26"}
    assert membership.list_hosts(store) == []
    # its subnet is free again
    assert str(membership.join(store, None, "h9", "198.51.100.9").subnet) == "203.0.113.0/26"


def test_join_writes_a_config_that_load_config_reads(tmp_path: Path) -> None:
    path = tmp_path / "rexcarcer.toml"
    path.write_text('dataset = "tank/rex"\n')
    hostconf.update(path, {"etcd": ["http://198.51.100.1:2379", "http://198.51.100.2:2379"],
                           "host": "h1", "subnet": "203.0.113.64/26"})  # fmt: skip
    config = load_config(root=tmp_path, environ={})
    assert config.etcd == ("http://198.51.100.1:2379", "http://198.51.100.2:2379")
    assert str(config.subnet) == "203.0.113.64/26" and config.dataset == "tank/rex"
    hostconf.update(path, {"etcd": None, "subnet": None})
    assert "etcd" not in tomllib.loads(path.read_text())


def test_local_address_towards_an_endpoint() -> None:
    assert membership.local_address("http://127.0.0.1:2379") == "127.0.0.1"
    ipaddress.ip_address(membership.local_address("http://[::1]:2379"))
