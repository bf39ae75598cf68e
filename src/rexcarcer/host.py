"""One host's drivers: what every feature and the engine work through.

Which drivers a host gets is decided in ``rexcarcer.wiring`` (or by a test,
which builds one from fakes); this module only holds them together, with the
host-local locks every part of rex shares.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from rexcarcer.config import Config
from rexcarcer.errors import StateError
from rexcarcer.platform.base import Platform
from rexcarcer.progress import Progress, QuietProgress
from rexcarcer.run import Runner
from rexcarcer.runtime.base import Runtime
from rexcarcer.state.base import Store
from rexcarcer.storage.base import Storage


@dataclass
class Host:
    config: Config
    runner: Runner
    storage: Storage
    platform: Platform
    store: Store
    progress: Progress = field(default_factory=QuietProgress)

    @property
    def runtime(self) -> Runtime:
        return self.platform.runtime

    @contextmanager
    def lock(self, name: str) -> Iterator[None]:
        """A host-local exclusive lock (image builds, base imports, a jail's lifecycle)."""
        path = self.config.root / "locks" / f"{name}.lock"
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = path.open("w")
        except OSError as exc:
            raise StateError(f"cannot take lock {path}: {exc}") from exc
        with fd:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield

    @contextmanager
    def try_lock(self, name: str) -> Iterator[bool]:
        """Like ``lock`` but never waits: yields whether the lock was taken."""
        path = self.config.root / "locks" / f"{name}.lock"
        path.parent.mkdir(parents=True, exist_ok=True)
        # not truncated: the holder's note (``claim``) stays readable
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                yield False
                return
            yield True
        finally:
            os.close(fd)

    @contextmanager
    def claim(self, name: str, note: str) -> Iterator[str | None]:
        """Like ``lock``, and says whether it had to wait: yields None when the
        lock was free, else the ``note`` its holder left (after waiting for it).
        The note is read before waiting: a holder that had not written its own
        yet shows as the one before it, or as empty."""
        path = self.config.root / "locks" / f"{name}.lock"
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            # O_CLOEXEC: a jail started under this lock must never inherit it
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
        except OSError as exc:
            raise StateError(f"cannot take lock {path}: {exc}") from exc
        try:
            waited: str | None = None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                held = os.pread(fd, 512, 0).decode(errors="replace").strip()
                waited = held or "another rex run"
                fcntl.flock(fd, fcntl.LOCK_EX)
            os.ftruncate(fd, 0)
            os.pwrite(fd, note.encode(), 0)
            yield waited
        finally:
            os.close(fd)

    def close(self) -> None:
        self.store.close()
