"""One test body for both stores (SQLite and memory): CAS semantics and IPAM."""

from __future__ import annotations

import ipaddress
import multiprocessing
from collections.abc import Iterator
from pathlib import Path

import pytest

from rexcarcer import ipam
from rexcarcer.errors import AddressError, Conflict
from rexcarcer.state.base import Compare, Delete, Put, Store, create_json
from rexcarcer.state.memory import MemoryStore
from rexcarcer.state.sqlite import SqliteStore


@pytest.fixture(params=["sqlite", "memory"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    s: Store = SqliteStore(tmp_path / "state.db") if request.param == "sqlite" else MemoryStore()
    yield s
    s.close()


def test_create_if_absent_and_compare_and_swap(store: Store) -> None:
    assert create_json(store, "jails/a", {"n": 1})
    assert not create_json(store, "jails/a", {"n": 2})
    entry = store.get("jails/a")
    assert entry is not None and entry.json() == {"n": 1}
    assert store.commit([Compare("jails/a", entry.revision)], [Put("jails/a", '{"n":3}')])
    assert not store.commit([Compare("jails/a", entry.revision)], [Put("jails/a", '{"n":4}')])
    assert store.get("jails/a").json() == {"n": 3}  # type: ignore[union-attr]


def test_prefix_listing_is_sorted_and_exact(store: Store) -> None:
    for key in ["jails/b", "jails/a", "jailsx", "ipam/1", "jails/%_"]:
        store.commit([], [Put(key, "{}")])
    assert [e.key for e in store.list("jails/")] == ["jails/%_", "jails/a", "jails/b"]
    store.commit([], [Delete("jails/a")])
    assert [e.key for e in store.list("jails/")] == ["jails/%_", "jails/b"]


def test_failed_compare_changes_nothing(store: Store) -> None:
    store.commit([], [Put("k", "1")])
    assert not store.commit([Compare("absent", 5)], [Put("k", "2"), Delete("k")])
    assert store.get("k").value == "1"  # type: ignore[union-attr]


def test_ipam_allocates_lowest_free_and_skips_the_host_address(store: Store) -> None:
    net = ipaddress.ip_network("203.0.113.0/29")
    got = [ipam.allocate(store, net, f"j{i}") for i in range(5)]
    assert [str(a) for a in got] == [f"203.0.113.{i}/29" for i in range(2, 7)]
    with pytest.raises(AddressError, match="no free address"):
        ipam.allocate(store, net, "j6")
    ipam.release(store, got[1].ip, "j1")
    assert str(ipam.allocate(store, net, "j7")) == "203.0.113.3/29"


def test_ipam_fixed_address_claims(store: Store) -> None:
    addr = ipaddress.ip_interface("198.51.100.8/24")
    ipam.claim(store, addr, "web")
    ipam.claim(store, addr, "web")  # ours already: fine
    with pytest.raises(Conflict, match="already used by jail 'web'"):
        ipam.claim(store, addr, "other")
    ipam.release(store, addr.ip, "other")  # not the holder: no effect
    assert ipam.owner(store, addr.ip) == "web"
    ipam.release_all(store, "web")
    assert ipam.owner(store, addr.ip) is None


def _grab(path: str, n: int, out: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    s = SqliteStore(Path(path))
    net = ipaddress.ip_network("203.0.113.0/24")
    out.put([str(ipam.allocate(s, net, f"p{n}-{i}")) for i in range(10)])


def test_sqlite_allocation_is_atomic_across_processes(tmp_path: Path) -> None:
    SqliteStore(tmp_path / "s.db").close()
    q: multiprocessing.Queue = multiprocessing.Queue()  # type: ignore[type-arg]
    procs = [
        multiprocessing.Process(target=_grab, args=(str(tmp_path / "s.db"), n, q)) for n in range(8)
    ]
    for p in procs:
        p.start()
    got = [a for _ in procs for a in q.get(timeout=60)]
    for p in procs:
        p.join()
    assert len(got) == 80 and len(set(got)) == 80


def test_etcd_tls_files_that_cannot_be_loaded_are_named(tmp_path: Path) -> None:
    from rexcarcer.errors import StateError
    from rexcarcer.state.etcd import tls_context

    assert tls_context(None) is None
    missing = tmp_path / "nope.pem"
    with pytest.raises(StateError, match=f"cannot load the etcd TLS files \\({missing}"):
        tls_context(missing)
    bad = tmp_path / "bad.pem"
    bad.write_text("not a certificate\n")
    with pytest.raises(StateError, match="cannot load the etcd TLS files"):
        tls_context(None, bad, bad)
