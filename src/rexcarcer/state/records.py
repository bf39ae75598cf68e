"""Typed access to the jail records in a store (model/jail.py owns their form)."""

from __future__ import annotations

from collections.abc import Iterable

from rexcarcer.model.jail import JailRecord
from rexcarcer.model.keys import HISTORY, JAILS, history_key, jail_key
from rexcarcer.state.base import Compare, Delete, Entry, Put, Store, dumps
from rexcarcer.state.memo import ParsedListing

_listed = ParsedListing(JailRecord.from_json)


def get_jail(store: Store, name: str) -> JailRecord | None:
    entry = store.get(jail_key(name))
    return JailRecord.from_json(entry.json()) if entry else None


def jail_entry(store: Store, name: str) -> tuple[JailRecord, Entry] | None:
    """The record with its store entry (for a compare-and-swap)."""
    entry = store.get(jail_key(name))
    return (JailRecord.from_json(entry.json()), entry) if entry else None


def list_jails(store: Store) -> list[JailRecord]:
    return _listed.of(store.list(JAILS))


def jails_of(entries: Iterable[Entry]) -> list[JailRecord]:
    """The jail records among ``entries`` (keys relative to the store's prefix)."""
    return [JailRecord.from_json(e.json()) for e in entries if e.key.startswith(JAILS)]


def create_jail(store: Store, rec: JailRecord) -> bool:
    """Claim ``jails/<name>`` (create-if-absent)."""
    return store.commit([Compare(rec.key, None)], [Put(rec.key, dumps(rec.as_json()))])


def put_jail(store: Store, rec: JailRecord) -> None:
    store.commit([], [Put(rec.key, dumps(rec.as_json()))])


def delete_jail(store: Store, name: str) -> None:
    entry = store.get(jail_key(name))
    if entry is not None:
        store.commit([Compare(entry.key, entry.revision)], [Delete(entry.key)])


# -- kept generations -------------------------------------------------------------------


def put_generation(store: Store, rec: JailRecord) -> None:
    """Keep ``rec`` as its jail's generation ``rec.generation``."""
    key = history_key(rec.name, rec.generation)
    store.commit([], [Put(key, dumps(rec.as_json()))])


def generations(store: Store, name: str) -> list[JailRecord]:
    """The kept earlier generations of jail ``name``, oldest first."""
    return [JailRecord.from_json(e.json()) for e in store.list(f"{HISTORY}{name}/")]


def delete_generation(store: Store, name: str, generation: int) -> None:
    store.commit([], [Delete(history_key(name, generation))])
