"""Listings of jail and health records parse only what changed since the last
one (state/memo.py): a record is reused only for the very text it was parsed
from, so what another process wrote is always what a listing returns."""

from __future__ import annotations

import pytest

from rexcarcer.errors import StateError
from rexcarcer.model.health import Health, HealthRecord
from rexcarcer.model.jail import Desired, JailRecord, Status
from rexcarcer.model.keys import jail_key
from rexcarcer.state import records
from rexcarcer.state.base import Put
from rexcarcer.state.health import all_health, put_health
from rexcarcer.state.memo import ParsedListing
from rexcarcer.state.memory import MemoryStore


def test_an_unchanged_record_is_not_parsed_again_and_a_changed_one_is() -> None:
    store = MemoryStore()
    for name in ("a", "b"):
        records.put_jail(store, JailRecord(name, status=Status.READY))
    first = records.list_jails(store)
    again = records.list_jails(store)
    assert [r.name for r in again] == ["a", "b"]
    assert again[0] is first[0] and again[1] is first[1]
    # another process stops b and removes a; c is new
    records.put_jail(store, first[1].replace(desired=Desired.STOPPED))
    records.delete_jail(store, "a")
    records.put_jail(store, JailRecord("c"))
    after = records.list_jails(store)
    assert [(r.name, r.desired) for r in after] == [("b", Desired.STOPPED), ("c", Desired.RUNNING)]
    assert after == [JailRecord.from_json(e.json()) for e in store.list("jails/")]


def test_a_damaged_record_fails_every_listing() -> None:
    store = MemoryStore()
    records.put_jail(store, JailRecord("a"))
    records.list_jails(store)
    store.commit([], [Put(jail_key("a"), '{"name": "a", "schema": 3, "created": "x"}')])
    for _ in range(2):
        with pytest.raises(StateError, match="malformed jail record 'a'"):
            records.list_jails(store)


def test_health_records_follow_the_store() -> None:
    store = MemoryStore()
    put_health(store, HealthRecord("a", Health.STARTING))
    assert all_health(store)["a"].state is Health.STARTING
    put_health(store, HealthRecord("a", Health.HEALTHY))
    assert all_health(store)["a"].state is Health.HEALTHY


def test_the_memo_holds_the_last_listing_only() -> None:
    parsed: list[object] = []

    def parse(data: object) -> object:
        parsed.append(data)
        return data

    memo = ParsedListing(parse)
    store = MemoryStore()
    store.commit([], [Put("k/1", "1"), Put("k/2", "2")])
    assert memo.of(store.list("k/")) == [1, 2] and parsed == [1, 2]
    assert memo.of(store.list("k/")) == [1, 2] and parsed == [1, 2]
    assert memo.of(store.list("k/1")) == [1]
    assert memo.of(store.list("k/")) == [1, 2] and parsed == [1, 2, 2]  # 2 was dropped
