"""Make the local unbound serve every live host's records (the agent's DNS side).

Each host's ``rex up`` publishes its jails' records in the store
(``dns/<jail>``, dns/publish.py) and pushes them into its own unbound. The
agent watches the store and makes its unbound serve the union of the records
of the jails whose host is alive (``hosts/<h>/alive``: a host that loses its
lease leaves every resolver), plus the sentinel. What unbound serves is read
back each time (``list_local_data``), so a reload, a restart or a local
``rex up`` in between is simply more drift to repair.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path

from rexcarcer.cluster import model
from rexcarcer.cluster.model import View
from rexcarcer.dns.plan import Change, plan_sync
from rexcarcer.dns.records import Record, in_zone, sentinel
from rexcarcer.dns.unbound import DnsBackend, apply, write_data_file

log = logging.getLogger("rexcarcer.agent")


def desired(view: View, zone: str) -> set[Record]:
    """The records of every jail whose host holds its lease, plus the sentinel."""
    alive = model.alive_hosts(view)
    out = {sentinel(zone)}
    for jail, value in model.published(view):
        if value.get("host") not in alive:
            continue
        for data in value.get("records", []):
            try:
                out.add(Record.from_json(data))
            except (KeyError, TypeError, ValueError):
                log.warning("DNS: ignoring a malformed record of jail %s: %r", jail, data)
    return out


def managed(name: str, zones: Sequence[str], names: set[str]) -> bool:
    """Names the agent may change: below the zone or the cluster's reverse zones,
    or a claimed or desired name (a HOSTNAME outside the zone)."""
    return name in names or in_zone(name, zones)


@dataclass
class DnsSync:
    backend: DnsBackend
    zone: str
    zones: tuple[str, ...]  # the zone and the cluster CIDR's reverse zones, absolute
    data_file: Path | None
    lock: Callable[[], AbstractContextManager[None]]
    # every name this agent served: PTRs outside a reverse zone it manages (an
    # IPv4 CIDR smaller than /24) still get removed
    seen: set[str] = field(default_factory=set)

    def sync(self, view: View) -> Change:
        want = desired(view, self.zone)
        self.seen |= {r.name for r in want}
        names = self.seen | model.claimed_names(view)
        with self.lock():
            served = [r for r in self.backend.list() if managed(r.name, self.zones, names)]
            change = plan_sync(served, want)
            if change.empty:
                return change
            apply(self.backend, change)
            if self.data_file is not None:
                write_data_file(self.data_file, want - {sentinel(self.zone)})
        log.info("DNS: -%d names, +%d records", len(change.remove), len(change.add))
        return change
