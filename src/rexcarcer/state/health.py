"""Typed access to the health records in a store (model/health.py owns their form)."""

from __future__ import annotations

from rexcarcer.model.health import HealthRecord
from rexcarcer.model.keys import HEALTH, health_key
from rexcarcer.state.base import Delete, Put, Store, dumps
from rexcarcer.state.memo import ParsedListing

_listed = ParsedListing(HealthRecord.from_json)


def get_health(store: Store, name: str) -> HealthRecord | None:
    entry = store.get(health_key(name))
    return HealthRecord.from_json(entry.json()) if entry else None


def all_health(store: Store) -> dict[str, HealthRecord]:
    """Every jail's health record, by jail name (one prefix read)."""
    return {r.name: r for r in _listed.of(store.list(HEALTH))}


def put_health(store: Store, rec: HealthRecord) -> None:
    store.commit([], [Put(rec.key, dumps(rec.as_json()))])


def delete_health(store: Store, name: str) -> None:
    if store.get(health_key(name)) is not None:
        store.commit([], [Delete(health_key(name))])
