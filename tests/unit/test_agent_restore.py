"""etcd restored from a snapshot: the watch notices that the store went back to
an older revision and says so (a member merely behind does not), and the
cluster agent puts back the keys of this host's jails the restore took away
and prunes the records it brought back of jails destroyed since. The real
restore on the three-host test bed: tests/cluster/test_faults_etcd.py."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from rexcarcer import ipam
from rexcarcer.agent import restore
from rexcarcer.base.source import Bases
from rexcarcer.engine import jails
from rexcarcer.engine.base import Engine
from rexcarcer.netpolicy.policy import NetworkPolicy
from rexcarcer.state.base import Delete, Entry, Put, put_json
from rexcarcer.state.gateway import Transient, b64
from rexcarcer.state.memory import MemoryStore
from rexcarcer.state.watch import Kind, Update, Watch
from tests.unit.fakes import fake_host
from tests.unit.test_engine import rexfile


class _Gateway:
    """Watch streams that each open with a header at the given revision."""

    def __init__(self, heads: list[int], stop: threading.Event) -> None:
        self.heads = heads
        self.stop = stop

    @contextmanager
    def stream(self, path: str, body: dict[str, Any], *, idle: float) -> Iterator[Any]:
        if not self.heads:
            self.stop.set()
            yield iter(())
            return
        yield iter([{"header": {"revision": str(self.heads.pop(0))}, "created": True}])


class _Store:
    prefix = ""

    def __init__(self, revisions: list[int], heads: list[int], stop: threading.Event) -> None:
        self.revisions = revisions
        self.gateway = _Gateway(heads, stop)

    def snapshot(self, prefix: str) -> tuple[list[Entry], int]:
        return [], self.revisions.pop(0)


def _resets(revisions: list[int], heads: list[int]) -> list[Update]:
    stop = threading.Event()
    watch = Watch(_Store(revisions, heads, stop), "", idle=1)  # type: ignore[arg-type]
    return [u for u in watch.updates(stop) if u.kind is Kind.RESET]


def test_a_store_that_went_back_is_read_again_as_restored() -> None:
    first, again = _resets([100, 40], [40])
    assert (first.revision, first.restored) == (100, False)
    assert (again.revision, again.restored) == (40, True)


def test_a_member_behind_gives_an_ordinary_reset() -> None:
    first, again = _resets([100, 105], [90])
    assert (again.revision, again.restored) == (105, False)
    assert not first.restored


class _Outage:
    """A store whose watch stream carries ``events`` (key, value or None,
    revision), then breaks (etcd stopped); reads answer ``reads`` in turn."""

    prefix = ""

    def __init__(
        self,
        reads: list[tuple[list[Entry], int]],
        events: list[tuple[str, str | None, int]],
        stop: threading.Event,
    ) -> None:
        self.reads, self.events, self.stop, self.streams = reads, events, stop, 0
        self.gateway = self

    def snapshot(self, prefix: str) -> tuple[list[Entry], int]:
        if not self.reads:
            self.stop.set()
            return [], 0
        return self.reads.pop(0)

    @contextmanager
    def stream(self, path: str, body: dict[str, Any], *, idle: float) -> Iterator[Any]:
        self.streams += 1
        if self.streams > 3:  # a watch that never reads again: the test ends
            self.stop.set()
        if self.streams > 1:
            raise Transient("connection refused", safe=True)
        kvs = [{"type": "DELETE" if v is None else "PUT",
                "kv": {"key": b64(k), "value": b64(v or ""), "mod_revision": str(r)}}
               for k, v, r in self.events]  # fmt: skip
        yield iter([{"header": {"revision": str(self.events[-1][2])}, "events": kvs}])


def _after_outage(reads: list[tuple[list[Entry], int]],
                  events: list[tuple[str, str | None, int]]) -> list[Update]:  # fmt: skip
    stop = threading.Event()
    watch = Watch(_Outage(reads, events, stop), "", idle=0.01)  # type: ignore[arg-type]
    return [u for u in watch.updates(stop) if u.kind is Kind.RESET and u.revision]


def test_a_store_restored_and_written_past_while_the_watch_was_away_is_restored() -> None:
    before = [Entry("jails/a", "1", 10), Entry("hosts/h1", "x", 11)]
    # seen: jails/b made at 12, hosts/h1 beaten at 14; then etcd is stopped and
    # restored to revision 11, and the other agents write it past 14 before this
    # watch is back: jails/b is gone, hosts/h1 was written again at 12
    events = [("jails/b", "1", 12), ("hosts/h1", "y", 14)]
    after = [Entry("jails/a", "1", 10), Entry("hosts/h1", "z", 12), Entry("dns/a", "r", 15)]
    first, again = _after_outage([(before, 11), (after, 15)], events)
    assert (first.revision, first.restored) == (11, False)
    assert again.revision == 15 and again.restored
    assert [e.key for e in again.entries] == ["jails/a", "hosts/h1", "dns/a"]


def test_a_store_that_only_went_on_while_the_watch_was_away_is_not_restored() -> None:
    before = [Entry("jails/a", "1", 10), Entry("hosts/h1", "x", 11)]
    events = [("jails/b", "1", 12), ("jails/a", None, 13), ("hosts/h1", "y", 14)]
    # the same history, written on: jails/b deleted, hosts/h1 beaten again
    after = [Entry("hosts/h1", "w", 16), Entry("dns/c", "r", 15)]
    first, again = _after_outage([(before, 11), (after, 16)], events)
    assert not first.restored and not again.restored and again.revision == 16
    # and one that answers with the same keys at the same revisions
    same = [Entry("jails/b", "1", 12), Entry("hosts/h1", "y", 14)]
    _, quiet = _after_outage([(before, 11), (same, 14)], events)
    assert not quiet.restored


def _engine(tmp_path: Path, store: MemoryStore) -> Engine:
    return Engine(fake_host(tmp_path, etcd=True, store=store), Bases(), [],
                  policy=NetworkPolicy())  # fmt: skip


def _view(store: MemoryStore) -> dict[str, Entry]:
    return {e.key: e for e in store.list("")}


def test_the_agent_puts_back_its_jails_and_prunes_destroyed_ones(tmp_path: Path) -> None:
    store = MemoryStore()
    eng = _engine(tmp_path, store)
    jails.up(eng, rexfile(tmp_path), "gone")  # destroyed after the snapshot
    put_json(store, "dns/gone", {"jail": "gone", "host": "h1", "records": []})
    put_json(store, "jails/far", {"name": "far", "host": "h2", "status": "ready"})
    snapshot = _view(store)
    jails.up(eng, rexfile(tmp_path), "new")  # created after the snapshot
    put_json(store, "dns/new", {"jail": "new", "host": "h1", "records": []})
    jails.destroy(eng, "gone")
    before = _view(store)  # what the agent saw last
    new_keys = restore.keys_of(before, "new")
    assert set(new_keys) >= {"jails/new", "dns/new"}
    assert any(k.startswith("ipam/") for k in new_keys)
    # the restore: the store as it was at the snapshot
    store.commit([], [Delete(k) for k in before if k not in snapshot])
    store.commit([], [Put(k, e.value) for k, e in snapshot.items() if k not in before])
    now = _view(store)
    assert "jails/new" not in now and "jails/gone" in now

    assert restore.republish(eng, store, before, now, "h1") == ["new"]
    assert restore.prune_all(eng, _view(store), "h1") == ["gone"]
    after = _view(store)
    assert {k: e.value for k, e in restore.keys_of(after, "new").items()} == {
        k: e.value for k, e in new_keys.items()
    }
    assert restore.keys_of(after, "gone") == {"dns/gone": after["dns/gone"]}  # no DNS hook here
    assert "gone" not in ipam.taken(store).values()
    assert [j.name for j in jails.list_jails(eng)] == ["far", "new"] and jails.is_running(
        eng, "new"
    )
    # nothing more to do; another host's jail is not touched
    assert restore.republish(eng, store, before, after, "h1") == []
    assert restore.prune_all(eng, after, "h1") == []
    assert store.get("jails/far") is not None


def test_a_jail_whose_address_was_taken_since_is_not_put_back(tmp_path: Path) -> None:
    store = MemoryStore()
    eng = _engine(tmp_path, store)
    jails.up(eng, rexfile(tmp_path), "new")
    before = _view(store)
    address = next(k for k in restore.keys_of(before, "new") if k.startswith("ipam/"))
    store.commit([], [Delete(k) for k in restore.keys_of(before, "new")])
    put_json(store, address, {"jail": "other", "host": "h2"})
    assert restore.republish(eng, store, before, _view(store), "h1") == []
    assert store.get("jails/new") is None


def test_zfs_that_cannot_list_never_prunes(tmp_path: Path) -> None:
    store = MemoryStore()
    eng = _engine(tmp_path, store)
    jails.up(eng, rexfile(tmp_path), "web")
    eng.host.runtime.remove("web")
    eng.host.storage.destroy("jails/web", recursive=True)
    eng.host.storage.destroy("jails", recursive=True)  # as if zfs could not list it
    assert jails.exists_here(eng, "web") is None
    assert restore.prune_all(eng, _view(store), "h1") == []
    assert store.get("jails/web") is not None
