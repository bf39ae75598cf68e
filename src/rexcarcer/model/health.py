"""The health record: one per jail, at ``health/<jail>`` in the state store.

It says how the jail's current run is going, as the host agent sees it, so
that the agent (which writes it) and ``rex ls`` (which shows it) read one thing.
The health hook (health/hook.py) writes it at every start, with the host's
boot and the time; the agent's health monitor records the verdicts of the
HEALTHCHECK probes; the agent's jail sync records a jail that stopped on its
own and stays down under its RESTART policy. Only changes are written, never
every probe.

JSON form::

    {"name", "state": "none"|"starting"|"healthy"|"unhealthy"|"exited",
     "boot", "started", "since", "reason", "restarts"}
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from rexcarcer.errors import StateError
from rexcarcer.model.jail import JailRecord
from rexcarcer.model.keys import health_key


class Health(StrEnum):
    NONE = "none"  # running; it has no HEALTHCHECK
    STARTING = "starting"  # started; no verdict yet (not in <svc>.svc records)
    HEALTHY = "healthy"
    UNHEALTHY = "unhealthy"
    EXITED = "exited"  # stopped on its own; its RESTART policy leaves it down


@dataclass(frozen=True, slots=True)
class HealthRecord:
    name: str
    state: Health
    boot: str = ""  # the host's boot (Platform.boot_id) in which the jail last started
    started: float = 0.0  # when, in seconds since the epoch
    since: float = 0.0  # when ``state`` last changed
    reason: str = ""  # the last probe's answer, or how the jail ended
    restarts: int = 0  # restarts the agent made since the host booted

    @property
    def key(self) -> str:
        return health_key(self.name)

    @property
    def shown(self) -> str | None:
        """What ``rex ls`` says in its health column (None: nothing to say)."""
        return None if self.state is Health.NONE else str(self.state)

    def replace(self, **changes: Any) -> HealthRecord:
        return dataclasses.replace(self, **changes)

    def as_json(self) -> dict[str, Any]:
        return {
            "name": self.name, "state": str(self.state), "boot": self.boot,
            "started": self.started, "since": self.since, "reason": self.reason,
            "restarts": self.restarts,
        }  # fmt: skip

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> HealthRecord:
        try:
            return cls(
                name=str(d["name"]), state=Health(d["state"]), boot=str(d.get("boot") or ""),
                started=float(d.get("started") or 0), since=float(d.get("since") or 0),
                reason=str(d.get("reason") or ""), restarts=int(d.get("restarts") or 0),
            )  # fmt: skip
        except (KeyError, TypeError, ValueError) as exc:
            raise StateError(
                f"malformed health record {d.get('name')!r}: {exc}",
                hint="the host agent rewrites it at the jail's next start",
            ) from exc


def in_service(rec: JailRecord, health: HealthRecord | None) -> bool:
    """Whether the jail belongs in its ``<svc>.svc`` A and SRV records: always
    without a HEALTHCHECK; with one, only while its last verdict is healthy (not
    while starting). Its own ``<jail>.jail`` name stays either way."""
    if rec.healthcheck is None:
        return True
    return health is not None and health.state is Health.HEALTHY
