"""Where ``rex up`` runs a jail in a cluster. Pure: a decision from a snapshot.

In order: the host that already holds the jail (``rex up`` again is an
update, and a name lives on one host); ``--host``; the one host whose jail
subnet contains the ``.rex``'s fixed ``IP``; else the live host with the fewest
jails (ties: by name, so the choice is reproducible).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass

from rexcarcer.cluster import ClusterError
from rexcarcer.cluster.model import Address, HostInfo
from rexcarcer.errors import Conflict, NotFound


@dataclass(frozen=True, slots=True)
class Placement:
    host: str
    why: str  # for --debug and the summary line


def _alive(hosts: Sequence[HostInfo], name: str, why: str) -> Placement:
    found = next((h for h in hosts if h.name == name), None)
    if found is None:
        raise NotFound(
            f"no host {name!r} in the cluster",
            hint=f"hosts: {', '.join(h.name for h in hosts) or 'none'} (see `rex hosts`)",
        )
    if not found.alive:
        raise ClusterError(
            f"host {name!r} is down (its agent does not renew its lease)",
            hint="start `rex agent` there, or pick another host with --host",
        )
    return Placement(name, why)


def _by_address(hosts: Sequence[HostInfo], ip: Address) -> str | None:
    return next((h.name for h in hosts if h.subnet and ip in ipaddress.ip_network(h.subnet)), None)


def place(
    hosts: Sequence[HostInfo],
    *,
    wanted: str | None = None,
    pinned: Address | None = None,
    owner: str | None = None,
) -> Placement:
    if owner is not None:
        if wanted is not None and wanted != owner:
            raise Conflict(
                f"the jail already exists on host {owner!r}",
                hint=f"destroy it there first, or run `rex up` with --host {owner}",
            )
        return _alive(hosts, owner, "the jail is there")
    if pinned is not None:
        holder = _by_address(hosts, pinned)
        if wanted is not None and holder is not None and holder != wanted:
            raise Conflict(
                f"IP {pinned} is in host {holder!r}'s jail subnet, not {wanted!r}'s",
                hint=f"use --host {holder}, or another IP",
            )
        if holder is not None:
            return _alive(hosts, holder, f"IP {pinned} is in its subnet")
    if wanted is not None:
        return _alive(hosts, wanted, "--host")
    live = sorted((h for h in hosts if h.alive), key=lambda h: (h.jails, h.name))
    if not live:
        raise ClusterError(
            "no live host to place the jail on", hint="start `rex agent` on the hosts"
        )
    return Placement(live[0].name, f"fewest jails ({live[0].jails})")
