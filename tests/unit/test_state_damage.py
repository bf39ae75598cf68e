"""A damaged state database is caught when it is opened, with a clear error
(exit 82) and the way back: the rotating online backups and `rex state restore`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from rexcarcer.errors import StateDamaged
from rexcarcer.state import backup
from rexcarcer.state.base import Put
from rexcarcer.state.sqlite import SqliteStore
from tests.schemas import validate

pytestmark = pytest.mark.unit


def _filled(path: Path, n: int = 300) -> None:
    store = SqliteStore(path)
    for i in range(n):
        assert store.commit([], [Put(f"jails/j{i}", f'{{"name": "j{i}", "pad": "{"x" * 200}"}}')])
    store.close()
    SqliteStore(path).close()  # the first open of a store with records backs it up


def _keys(path: Path) -> list[str]:
    store = SqliteStore(path, backup=False)
    try:
        return [e.key for e in store.list("jails/")]
    finally:
        store.close()


@pytest.mark.parametrize("damage", ["truncated", "overwritten", "emptied", "garbage"])
def test_damage_is_caught_at_open(tmp_path: Path, damage: str) -> None:
    db = tmp_path / "state.db"
    _filled(db)
    assert backup.backups(db), "the first open took a backup"
    size = db.stat().st_size
    if damage == "truncated":
        os.truncate(db, size // 2)
    elif damage == "emptied":
        os.truncate(db, 0)
    elif damage == "garbage":
        db.write_bytes(os.urandom(size))
    else:  # pages in the middle overwritten
        with db.open("r+b") as f:
            f.seek(size // 3)
            f.write(b"\xff" * 8192)
    with pytest.raises(StateDamaged) as caught:
        SqliteStore(db)
    assert caught.value.exit_code == 82
    assert f"state database {db} is damaged" in caught.value.message
    assert caught.value.hint and "rex state restore" in caught.value.hint


def test_restore_brings_back_the_newest_good_backup(tmp_path: Path) -> None:
    db = tmp_path / "state.db"
    _filled(db, 20)
    older = backup.backups(db)[0]
    store = SqliteStore(db, backup=False)
    store.commit([], [Put("jails/late", '{"name": "late"}')])
    newer = backup.take(store.db, db)
    store.close()
    assert newer is not None
    newer.path.write_bytes(b"not a database at all, not even close" * 100)  # a bad backup too
    db.write_bytes(b"\0" * 4096)
    used, moved = backup.restore(db)
    assert used.path == older.path  # the newest one that passes its check
    assert moved is not None and moved.read_bytes() == b"\0" * 4096
    assert _keys(db) == sorted(f"jails/j{i}" for i in range(20))


def test_backups_rotate(tmp_path: Path) -> None:
    db = tmp_path / "state.db"
    _filled(db, 1)
    store = SqliteStore(db, backup=False)
    for _ in range(backup.KEEP + 3):
        backup.take(store.db, db)
    store.close()
    assert len(backup.backups(db)) == backup.KEEP


def test_the_cli_restores_and_doctor_says_how(tmp_path: Path) -> None:
    db = tmp_path / "state.db"
    _filled(db, 5)
    os.truncate(db, db.stat().st_size // 2)
    env = {"PATH": os.environ["PATH"], "REX_ROOT": str(tmp_path), "REX_DATASET": "nopool/rex"}

    def rex(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "rexcarcer", *args], env=env,
                              capture_output=True, text=True, check=False)  # fmt: skip

    doctor = rex("doctor")
    assert "damaged" in doctor.stdout + doctor.stderr
    assert "rex state restore" in doctor.stdout + doctor.stderr
    listed = rex("-o", "json", "state", "backups")
    validate("state-backups", json.loads(listed.stdout))
    done = rex("state", "restore")
    assert done.returncode == 0, done.stderr
    made = rex("-o", "json", "state", "backup")
    validate("state-backup", json.loads(made.stdout))
    assert "restored" in done.stderr
    assert _keys(db) == sorted(f"jails/j{i}" for i in range(5))
    assert list(tmp_path.glob("state.db.damaged-*"))
