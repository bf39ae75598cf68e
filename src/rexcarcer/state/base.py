"""The state store: keys, values and compare-and-swap transactions.

Embedded default: SQLite in the state directory; cluster: etcd. Keys are
paths (``jails/web``, ``ipam/198.51.100.7``); values are JSON text. Every
change bumps a store-wide revision, as in etcd, and each key remembers the
revision that last changed it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol


@dataclass(frozen=True, slots=True)
class Entry:
    key: str
    value: str
    revision: int  # the store revision that last modified the key

    def json(self) -> Any:
        return json.loads(self.value)


@dataclass(frozen=True, slots=True)
class Compare:
    """Holds when ``key`` is absent (revision None) or was last modified at ``revision``."""

    key: str
    revision: int | None


@dataclass(frozen=True, slots=True)
class Put:
    key: str
    value: str


@dataclass(frozen=True, slots=True)
class Delete:
    key: str


Op = Put | Delete


class Store(Protocol):
    def get(self, key: str) -> Entry | None: ...

    def list(self, prefix: str) -> list[Entry]:
        """Every entry whose key starts with ``prefix``, sorted by key."""
        ...

    def commit(self, compares: Sequence[Compare], ops: Sequence[Op]) -> bool:
        """Apply ``ops`` atomically iff every compare holds; return whether it did."""
        ...

    def close(self) -> None: ...


def put_json(store: Store, key: str, value: Any) -> None:
    store.commit([], [Put(key, dumps(value))])


def create_json(store: Store, key: str, value: Any) -> bool:
    """Create-if-absent."""
    return store.commit([Compare(key, None)], [Put(key, dumps(value))])


def dumps(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))
