"""The embedded store: SQLite in WAL mode; a transaction is ``BEGIN IMMEDIATE``
so that concurrent ``rex`` processes serialise their compare-and-swaps."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from rexcarcer.errors import StateDamaged, StateError
from rexcarcer.state import backup as backups
from rexcarcer.state.base import Compare, Delete, Entry, Op, Put

_SCHEMA = """
CREATE TABLE IF NOT EXISTS kv (key TEXT PRIMARY KEY, value TEXT NOT NULL, rev INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS meta (id INTEGER PRIMARY KEY CHECK (id = 0), rev INTEGER NOT NULL);
INSERT OR IGNORE INTO meta (id, rev) VALUES (0, 0);
"""


class SqliteStore:
    def __init__(self, path: Path, *, timeout: float = 120.0, backup: bool = True) -> None:
        self.path = path
        if backups.emptied(path):
            raise StateDamaged(f"state database {path} is damaged: empty, but backups of it exist",
                               hint=backups.damaged_hint(path))  # fmt: skip
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self.db = sqlite3.connect(path, timeout=timeout, isolation_level=None)
            # damage shows here first ("file is not a database"), or in the check
            backups.check(self.db, path)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=NORMAL")
            with self._tx():
                for stmt in _SCHEMA.strip().split(";\n"):
                    self.db.execute(stmt)
        except sqlite3.DatabaseError as exc:
            if isinstance(exc, sqlite3.OperationalError):  # locked, no permission, no disk
                raise StateError(f"cannot open state store {path}: {exc}") from exc
            raise StateDamaged(f"state database {path} is damaged: {exc}",
                               hint=backups.damaged_hint(path)) from exc  # fmt: skip
        except (sqlite3.Error, OSError) as exc:
            raise StateError(f"cannot open state store {path}: {exc}") from exc
        # an empty store is not worth a backup (and must not push a good one out)
        if backup and backups.due(path) and self.db.execute("SELECT 1 FROM kv LIMIT 1").fetchone():
            backups.take(self.db, path, wait=False)

    @contextmanager
    def _tx(self) -> Iterator[None]:
        try:
            self.db.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise StateError(f"state store {self.path} is unavailable: {exc}") from exc
        try:
            yield
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        else:
            self.db.execute("COMMIT")

    def get(self, key: str) -> Entry | None:
        try:
            row = self.db.execute("SELECT key, value, rev FROM kv WHERE key = ?", (key,)).fetchone()
        except sqlite3.Error as exc:
            raise StateError(f"state store read failed: {exc}") from exc
        return Entry(*row) if row else None

    def list(self, prefix: str) -> list[Entry]:
        # a range scan rather than LIKE: keys may contain % and _
        hi = prefix + "\U0010ffff"
        try:
            rows = self.db.execute(
                "SELECT key, value, rev FROM kv WHERE key >= ? AND key < ? ORDER BY key",
                (prefix, hi),
            ).fetchall()
        except sqlite3.Error as exc:
            raise StateError(f"state store read failed: {exc}") from exc
        return [Entry(*r) for r in rows]

    def commit(self, compares: Sequence[Compare], ops: Sequence[Op]) -> bool:
        try:
            with self._tx():
                for cmp in compares:
                    row = self.db.execute("SELECT rev FROM kv WHERE key = ?", (cmp.key,)).fetchone()
                    if (row[0] if row else None) != cmp.revision:
                        return False
                rev = self.db.execute("SELECT rev FROM meta").fetchone()[0] + 1
                self.db.execute("UPDATE meta SET rev = ?", (rev,))
                for op in ops:
                    if isinstance(op, Put):
                        self.db.execute(
                            "INSERT INTO kv (key, value, rev) VALUES (?, ?, ?) "
                            "ON CONFLICT(key) DO UPDATE "
                            "SET value = excluded.value, rev = excluded.rev",
                            (op.key, op.value, rev),
                        )
                    elif isinstance(op, Delete):
                        self.db.execute("DELETE FROM kv WHERE key = ?", (op.key,))
            return True
        except sqlite3.Error as exc:
            raise StateError(f"state store write failed: {exc}") from exc

    def close(self) -> None:
        self.db.close()
