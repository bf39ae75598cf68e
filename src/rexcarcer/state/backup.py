"""The embedded store's health and its rotating backups.

A damaged ``state.db`` (truncated, overwritten, a bad sector) must be caught
when it is opened, not when a half-read record sends rex the wrong way: every
open runs ``PRAGMA quick_check`` (sqlite.org/pragma.html#pragma_quick_check:
O(N), checks every page's structure, skips index cross-checks; a few ms for a
host's records). A file emptied to 0 bytes is a valid empty database to
SQLite, so an empty ``state.db`` beside existing backups counts as damaged.

Backups are SQLite online backups (sqlite.org/backup.html; Python's
``Connection.backup``), a consistent copy taken while other rex processes
may be writing, at most every ``BACKUP_EVERY`` seconds when a store is opened,
``KEEP`` of them in ``<root>/backups/``. ``rex state restore`` puts the newest
good one back and keeps the damaged file beside it.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

from rexcarcer.errors import NotFound, StateDamaged, StateError

BACKUP_EVERY = 600.0
KEEP = 5
PREFIX = "state-"


def backup_dir(db: Path) -> Path:
    return db.parent / "backups"


def damaged_hint(db: Path) -> str:
    return (
        f"`rex state restore` puts back the newest good backup from {backup_dir(db)} "
        "(the damaged file is kept beside it), then `rex state rebuild --force` brings its "
        "jail records up to date from the datasets; with no good backup, `rex state "
        "rebuild` rebuilds them from the datasets alone: see docs/faults.md"
    )


def check(db: sqlite3.Connection, path: Path) -> None:
    """Raise StateDamaged unless ``db`` passes quick_check."""
    try:
        rows = db.execute("PRAGMA quick_check").fetchall()
    except sqlite3.DatabaseError as exc:
        raise StateDamaged(f"state database {path} is damaged: {exc}",
                           hint=damaged_hint(path)) from exc  # fmt: skip
    problems = [str(r[0]) for r in rows if r and r[0] != "ok"]
    if problems:
        raise StateDamaged(f"state database {path} is damaged: {'; '.join(problems[:3])}",
                           hint=damaged_hint(path))  # fmt: skip


def emptied(path: Path) -> bool:
    """An empty file where backups show there was a database."""
    try:
        empty = path.stat().st_size == 0
    except FileNotFoundError:
        return False
    return empty and bool(backups(path))


@dataclass(frozen=True, slots=True)
class Backup:
    path: Path
    taken: float

    def as_json(self) -> dict[str, object]:
        return {"path": str(self.path), "taken": int(self.taken),
                "size": self.path.stat().st_size}  # fmt: skip


def backups(db: Path) -> list[Backup]:
    """The kept backups, newest first."""
    try:
        found = [p for p in backup_dir(db).iterdir()
                 if p.name.startswith(PREFIX) and p.suffix == ".db"]  # fmt: skip
    except FileNotFoundError:
        return []
    out = [Backup(p, p.stat().st_mtime) for p in found]
    return sorted(out, key=lambda b: (b.taken, b.path.name), reverse=True)


def take(
    db: sqlite3.Connection, path: Path, *, keep: int = KEEP, wait: bool = True
) -> Backup | None:
    """An online backup of ``db`` (already checked), then drop all but ``keep``.
    Without ``wait``, None when another process is taking one right now (50
    `rex up`s opening the store at once make one backup, not 50)."""
    where = backup_dir(path)
    try:
        where.mkdir(mode=0o700, exist_ok=True)
        lock = os.open(where / ".lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise StateError(f"cannot back up the state database into {where}: {exc}") from exc
    try:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            return None
        if not wait and not due(path):  # the one that held the lock just took it
            return None
        return _take(db, path, where, keep)
    finally:
        os.close(lock)


def _copy(src: sqlite3.Connection, path: Path) -> None:
    """SQLite's online backup of ``src`` into the database file ``path``."""
    dest = sqlite3.connect(path)
    try:
        src.backup(dest)
    finally:
        dest.close()


def _take(db: sqlite3.Connection, path: Path, where: Path, keep: int) -> Backup:
    now = time.time()
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(now)) + f".{int(now * 1e6) % 1000000:06d}"
    final = where / f"{PREFIX}{stamp}-{os.getpid()}.db"
    tmp = where / f".{final.name}.tmp"
    try:
        _copy(db, tmp)
        os.replace(tmp, final)
    except (sqlite3.Error, OSError) as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise StateError(f"cannot back up the state database to {final}: {exc}") from exc
    for old in backups(path)[keep:]:
        with contextlib.suppress(OSError):
            old.path.unlink()
    return Backup(final, final.stat().st_mtime)


def due(path: Path, every: float = BACKUP_EVERY) -> bool:
    have = backups(path)
    return not have or time.time() - have[0].taken >= every


def restore(path: Path, source: Path | None = None) -> tuple[Backup, Path | None]:
    """Put the newest good backup (or ``source``) in place of ``path``; the
    replaced file (with its -wal and -shm) is renamed ``<name>.damaged-<time>``.
    Returns the backup used and where the old file went (None: there was none)."""
    candidates = [Backup(source, source.stat().st_mtime)] if source else backups(path)
    if not candidates:
        raise NotFound(
            f"no backup of {path} in {backup_dir(path)}",
            hint="rex takes one every 10 minutes of use; `rex state rebuild` rebuilds the "
            "jail records from the datasets (docs/faults.md)",
        )
    for candidate in candidates:
        if _good(candidate.path):
            break
    else:
        raise StateDamaged(f"no good backup of {path}: every one fails its check",
                           hint="`rex state rebuild` rebuilds the jail records from the "
                                "datasets (docs/faults.md)")  # fmt: skip
    moved = set_aside(path)
    src = sqlite3.connect(f"file:{candidate.path}?mode=ro", uri=True)
    try:
        _copy(src, path)
    except sqlite3.Error as exc:
        raise StateError(f"cannot restore {path} from {candidate.path}: {exc}") from exc
    finally:
        src.close()
    return candidate, moved


def set_aside(path: Path) -> Path | None:
    """Rename ``path`` (with its -wal and -shm) to ``<name>.damaged-<time>``;
    where it went, or None when there was none."""
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
    moved: Path | None = None
    for suffix in ("", "-wal", "-shm"):
        old = Path(f"{path}{suffix}")
        if old.exists():
            target = old.with_name(f"{old.name}.damaged-{stamp}")
            os.replace(old, target)
            moved = moved or target
    return moved


def _good(path: Path) -> bool:
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    except sqlite3.Error:
        return False
    try:
        check(db, path)
        return True
    except StateDamaged:
        return False
    finally:
        db.close()
