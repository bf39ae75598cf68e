"""Routes to the other hosts' jail subnets, via those hosts' addresses.

The desired routes come from the cluster's view (model.routes); the platform's
route table (platform/*.py: ``ip route`` with rex's protocol mark on Linux,
route(8) on FreeBSD) says which are installed. ``sync`` adds, changes and
removes only rex's own routes.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass

from rexcarcer.cluster.model import Address, Network
from rexcarcer.platform.base import RouteTable

log = logging.getLogger("rexcarcer.agent")

Routes = Mapping[Network, Address]


@dataclass(frozen=True, slots=True)
class RouteChange:
    add: tuple[tuple[Network, Address], ...] = ()
    remove: tuple[Network, ...] = ()

    @property
    def empty(self) -> bool:
        return not self.add and not self.remove


def plan(current: Routes, desired: Routes) -> RouteChange:
    add = tuple(sorted(((n, a) for n, a in desired.items() if current.get(n) != a), key=str))
    remove = tuple(sorted((n for n in current if n not in desired), key=str))
    return RouteChange(add, remove)


@dataclass
class RouteSync:
    table: RouteTable

    def sync(self, desired: Routes) -> RouteChange:
        change = plan(self.table.current(), desired)
        for net in change.remove:
            self.table.delete(net)
        for net, via in change.add:
            self.table.add(net, via)
        if not change.empty:
            log.info("routes: +%s -%s", [f"{n} via {a}" for n, a in change.add],
                     [str(n) for n in change.remove])  # fmt: skip
        return change
