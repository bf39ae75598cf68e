"""The health ``JailHook``: every start of a jail writes ``health/<jail>`` (the
host's boot, the time, health ``starting`` or ``none``); a stop removes it.

It runs first among the hooks, so that the DNS hook, which publishes the jail
right after, finds the jail ``starting`` and leaves it out of its ``<svc>.svc``
records until the host agent's first passing probe (model/health.py). With the
boot in the record the agent tells a jail that has not run since the host
booted (start it, whatever its RESTART policy) from one that stopped on its own
(its policy decides).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from rexcarcer.model.health import Health, HealthRecord
from rexcarcer.state.health import delete_health, get_health, put_health

if TYPE_CHECKING:
    from collections.abc import Sequence

    from rexcarcer.host import Host
    from rexcarcer.model.jail import JailRecord
    from rexcarcer.model.recordprop import RebuiltJail
    from rexcarcer.runtime.base import JailSpec


class HealthHook:
    name = "health"

    def prepare(self, host: Host, rec: JailRecord, spec: JailSpec) -> None:
        return None

    def started(self, host: Host, rec: JailRecord, spec: JailSpec) -> None:
        boot, now = host.platform.boot_id(), time.time()
        old = get_health(host.store, rec.name)
        # restarts count within one boot; `rex start` after a reboot starts afresh
        restarts = old.restarts if old is not None and old.boot == boot else 0
        state = Health.STARTING if rec.healthcheck is not None else Health.NONE
        put_health(host.store, HealthRecord(rec.name, state, boot, now, now, "started",
                                            restarts))  # fmt: skip

    def stopped(self, host: Host, rec: JailRecord) -> None:
        delete_health(host.store, rec.name)

    def destroyed(self, host: Host, rec: JailRecord) -> None:
        delete_health(host.store, rec.name)

    def rebuilt(self, host: Host, jails: Sequence[RebuiltJail]) -> list[tuple[str, str]]:
        """A running jail gets the record a start writes (its check ``starting``
        until the agent's next probe), so that DNS, published next, sees it."""
        boot, now = host.platform.boot_id(), time.time()
        for j in jails:
            if j.running and get_health(host.store, j.rec.name) is None:
                state = Health.STARTING if j.rec.healthcheck is not None else Health.NONE
                put_health(host.store, HealthRecord(j.rec.name, state, boot, now, now,
                                                    "state rebuilt", 0))  # fmt: skip
        return []
