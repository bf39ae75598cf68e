"""Leases for liveness: grant, keep alive at TTL/3, re-register when lost.

No etcd client refreshes a lease on its own (notes section 4), so the
``LeaseKeeper`` thread does: it grants a lease, puts its keys on it, and calls
keep-alive every TTL/3. When etcd answers that the lease is gone (it expired
while this host was cut off, or someone revoked it), the keeper grants a new
one and puts the keys again: a host that comes back re-registers by itself.
While etcd is unreachable it keeps trying every second and logs once.
"""

from __future__ import annotations

import itertools
import logging
import threading
from collections.abc import Callable, Mapping
from typing import Protocol

from rexcarcer.errors import StateError
from rexcarcer.state.base import Delete, Put
from rexcarcer.state.memory import MemoryStore

log = logging.getLogger("rexcarcer.lease")


class Leases(Protocol):
    """What the keeper needs; ``EtcdStore`` and ``FakeLeases`` provide it."""

    def grant(self, ttl: int) -> int: ...

    def keepalive(self, lease: int) -> int:
        """The remaining TTL, or 0 when the lease no longer exists."""
        ...

    def revoke(self, lease: int) -> None: ...

    def put_leased(self, key: str, value: str, lease: int) -> None: ...


class FakeLeases:
    """Leases over a ``MemoryStore`` for unit tests; ``expire`` plays etcd's timer."""

    def __init__(self, store: MemoryStore) -> None:
        self.store = store
        self.keys: dict[int, set[str]] = {}
        self._ids = itertools.count(1000)

    def grant(self, ttl: int) -> int:
        lease = next(self._ids)
        self.keys[lease] = set()
        return lease

    def keepalive(self, lease: int) -> int:
        return 10 if lease in self.keys else 0

    def revoke(self, lease: int) -> None:
        self.expire(lease)

    def expire(self, lease: int) -> None:
        keys = self.keys.pop(lease, set())
        if keys:
            self.store.commit([], [Delete(k) for k in sorted(keys)])

    def put_leased(self, key: str, value: str, lease: int) -> None:
        if lease not in self.keys:
            raise StateError(f"lease {lease} not found")
        for others in self.keys.values():
            others.discard(key)
        self.keys[lease].add(key)
        self.store.commit([], [Put(key, value)])


class LeaseKeeper:
    """Keeps ``keys`` (key -> value) alive on a lease of ``ttl`` seconds."""

    def __init__(
        self,
        leases: Leases,
        ttl: int,
        keys: Mapping[str, str],
        *,
        on_register: Callable[[int], None] | None = None,
    ) -> None:
        if ttl < 2:
            raise StateError(f"lease TTL {ttl} s is too short", hint="use 2 s or more")
        self.leases = leases
        self.ttl = ttl
        self.keys = dict(keys)
        self.lease = 0
        self.registrations = 0
        self.on_register = on_register
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def register(self) -> int:
        """Grant a lease and put the keys on it; the lease ID."""
        lease = self.leases.grant(self.ttl)
        for key, value in self.keys.items():
            self.leases.put_leased(key, value, lease)
        self.lease = lease
        self.registrations += 1
        log.info("lease %x granted (TTL %d s): %s", lease, self.ttl, ", ".join(self.keys))
        if self.on_register is not None:
            self.on_register(lease)
        return lease

    def tick(self) -> bool:
        """One keep-alive (registering again when the lease is gone); whether etcd answered."""
        try:
            if not self.lease or self.leases.keepalive(self.lease) <= 0:
                if self.lease:
                    log.warning("lease %x not found (expired or revoked); registering again",
                                self.lease)  # fmt: skip
                self.register()
            return True
        except StateError as exc:
            log.warning("lease keep-alive failed: %s", exc)
            return False

    def start(self) -> None:
        self.register()
        self._thread = threading.Thread(target=self._run, name="lease-keeper", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        interval = self.ttl / 3
        while not self._stop.wait(interval):
            interval = self.ttl / 3 if self.tick() else min(1.0, self.ttl / 3)

    def stop(self, *, revoke: bool = False) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if revoke and self.lease:
            self.leases.revoke(self.lease)
            self.lease = 0
