"""One host's drivers: what every feature and the engine work through.

Which drivers a host gets is decided in ``rexcarcer.wiring`` (or by a test,
which builds one from fakes); this module only holds them together, with the
host-local locks every part of rex shares.
"""

from __future__ import annotations

import fcntl
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
        with path.open("w") as fd:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                yield False
                return
            yield True

    def close(self) -> None:
        self.store.close()
