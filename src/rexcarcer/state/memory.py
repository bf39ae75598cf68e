"""An in-memory store with the same semantics as SQLite and etcd, for unit tests."""

from __future__ import annotations

import threading
from collections.abc import Sequence

from rexcarcer.state.base import Compare, Delete, Entry, Op, Put


class MemoryStore:
    def __init__(self) -> None:
        self.data: dict[str, Entry] = {}
        self.revision = 0
        self._lock = threading.Lock()

    def get(self, key: str) -> Entry | None:
        return self.data.get(key)

    def list(self, prefix: str) -> list[Entry]:
        return [self.data[k] for k in sorted(self.data) if k.startswith(prefix)]

    def commit(self, compares: Sequence[Compare], ops: Sequence[Op]) -> bool:
        with self._lock:
            for cmp in compares:
                entry = self.data.get(cmp.key)
                if (entry.revision if entry else None) != cmp.revision:
                    return False
            self.revision += 1
            for op in ops:
                if isinstance(op, Put):
                    self.data[op.key] = Entry(op.key, op.value, self.revision)
                elif isinstance(op, Delete):
                    self.data.pop(op.key, None)
            return True

    def close(self) -> None:
        pass
