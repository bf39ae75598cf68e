"""Routes to the other hosts' jail subnets, via those hosts' addresses.

Linux: ``ip route replace SUBNET via ADDR proto 213``; the protocol number
marks rex's routes, so ``ip -j route show proto 213`` reads back exactly those
and nothing else is ever touched. FreeBSD: ``route -n add -net`` (``change``
when it exists); route(8) has no such mark, so the agent only removes routes
it installed itself in this run.
"""

from __future__ import annotations

import ipaddress
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field

from rexcarcer.cluster.model import Address, Network
from rexcarcer.run import Runner
from rexcarcer.runtime.base import RuntimeKind

log = logging.getLogger("rexcarcer.agent")

PROTO = "213"  # unassigned in iproute2's rt_protos

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


def linux_add(net: Network, via: Address) -> list[str]:
    return ["ip", "route", "replace", str(net), "via", str(via), "proto", PROTO]


def linux_del(net: Network) -> list[str]:
    return ["ip", "route", "del", str(net), "proto", PROTO]


def linux_show() -> list[str]:
    return ["ip", "-j", "route", "show", "proto", PROTO]


def parse_linux(text: str) -> dict[Network, Address]:
    """``ip -j route show proto 213`` -> subnet -> gateway."""
    out: dict[Network, Address] = {}
    for row in json.loads(text or "[]"):
        if "gateway" in row and "/" in row.get("dst", ""):
            out[ipaddress.ip_network(row["dst"])] = ipaddress.ip_address(row["gateway"])
    return out


def freebsd_add(net: Network, via: Address, *, change: bool = False) -> list[str]:
    return ["route", "-n", "change" if change else "add", "-net", str(net), str(via)]


def freebsd_del(net: Network) -> list[str]:
    return ["route", "-n", "delete", "-net", str(net)]


@dataclass
class RouteSync:
    runner: Runner
    kind: RuntimeKind
    installed: dict[Network, Address] = field(default_factory=dict)

    def current(self) -> dict[Network, Address]:
        if self.kind is RuntimeKind.LINUX:
            return parse_linux(self.runner.run(linux_show()).stdout)
        return dict(self.installed)

    def sync(self, desired: Routes) -> RouteChange:
        change = plan(self.current(), desired)
        for net in change.remove:
            argv = linux_del(net) if self.kind is RuntimeKind.LINUX else freebsd_del(net)
            self.runner.run(argv, check=False)  # already gone is fine
            self.installed.pop(net, None)
        for net, via in change.add:
            self._add(net, via)
            self.installed[net] = via
        if not change.empty:
            log.info("routes: +%s -%s", [f"{n} via {a}" for n, a in change.add],
                     [str(n) for n in change.remove])  # fmt: skip
        return change

    def _add(self, net: Network, via: Address) -> None:
        if self.kind is RuntimeKind.LINUX:
            self.runner.run(linux_add(net, via))
        elif not self.runner.run(freebsd_add(net, via), check=False).ok:
            self.runner.run(freebsd_add(net, via, change=True))
