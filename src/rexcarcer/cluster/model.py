"""The cluster's records and everything computed from them. Pure: no I/O.

The agent and ``rex hosts`` read a snapshot of the store (key -> Entry) and
turn it into views with these functions; the unit tests feed them the memory
store's entries.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from rexcarcer.cluster import ClusterError
from rexcarcer.model import keys
from rexcarcer.state.base import Entry

CONFIG = keys.CLUSTER_CONFIG
HOSTS = keys.HOSTS
SUBNETS = keys.SUBNETS
JAILS = keys.JAILS
DNS = keys.DNS
NAMES = keys.NAMES
ALIVE = "alive"

DEFAULT_CIDR = "203.0.113.0/24"  # a documentation range: set your own (docs/cluster.md)
DEFAULT_HOST_PREFIX = 27
VERSION = 1

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address
View = Mapping[str, Entry]

_HOST_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")


@dataclass(frozen=True, slots=True)
class Settings:
    cidr: Network
    zone: str
    host_prefix: int

    def as_json(self) -> dict[str, Any]:
        return {
            "cidr": str(self.cidr),
            "zone": self.zone,
            "host_prefix": self.host_prefix,
            "version": VERSION,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Settings:
        return cls(ipaddress.ip_network(data["cidr"]), str(data["zone"]), int(data["host_prefix"]))


def make_settings(cidr: str, zone: str, host_prefix: int) -> Settings:
    try:
        net = ipaddress.ip_network(cidr, strict=True)
    except ValueError as exc:
        raise ClusterError(f"bad cluster CIDR {cidr!r}: {exc}", hint="e.g. 10.64.0.0/16") from exc
    if not net.prefixlen < host_prefix <= net.max_prefixlen - 2:
        raise ClusterError(
            f"host subnets /{host_prefix} do not fit the cluster CIDR {net}",
            hint=f"pick --host-prefix between {net.prefixlen + 1} and {net.max_prefixlen - 2}",
        )
    return Settings(net, zone.strip(".").lower(), host_prefix)


@dataclass(frozen=True, slots=True)
class HostInfo:
    name: str
    address: str
    subnet: str
    alive: bool
    jails: int

    def as_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "address": self.address,
            "subnet": self.subnet,
            "alive": self.alive,
            "jails": self.jails,
        }


def check_host_name(name: str) -> str:
    if not _HOST_NAME.match(name):
        raise ClusterError(
            f"bad host name {name!r}",
            hint="a host name is one DNS label: a-z, 0-9 and '-', at most 63 characters",
        )
    return name


def host_key(name: str) -> str:
    return f"{HOSTS}{name}"


def alive_key(name: str) -> str:
    return f"{HOSTS}{name}/{ALIVE}"


def subnet_key(net: Network) -> str:
    return f"{SUBNETS}{net.network_address}_{net.prefixlen}"


def _json(entry: Entry) -> dict[str, Any]:
    try:
        data = json.loads(entry.value)
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def record(entry: Entry) -> dict[str, Any]:
    """An entry's JSON object ({} when it holds anything else)."""
    return _json(entry)


def under(view: View, prefix: str) -> Iterator[tuple[str, Entry]]:
    """(rest of the key, entry) for every key below ``prefix``, in key order."""
    for key in sorted(view):
        if key.startswith(prefix):
            yield key[len(prefix) :], view[key]


def host_records(view: View) -> dict[str, dict[str, Any]]:
    """host name -> its ``hosts/<host>`` record."""
    return {rest: _json(e) for rest, e in under(view, HOSTS) if "/" not in rest}


def alive_hosts(view: View) -> set[str]:
    return {rest.split("/")[0] for rest, _ in under(view, HOSTS) if rest.endswith("/" + ALIVE)}


def subnet_claims(view: View) -> dict[Network, str]:
    """claimed subnet -> host."""
    out: dict[Network, str] = {}
    for rest, e in under(view, SUBNETS):
        addr, _, length = rest.partition("_")
        out[ipaddress.ip_network(f"{addr}/{length}")] = str(_json(e).get("host", ""))
    return out


def jails_per_host(view: View) -> dict[str, int]:
    out: dict[str, int] = {}
    for _, e in under(view, JAILS):
        owner = str(_json(e).get("host", ""))
        out[owner] = out.get(owner, 0) + 1
    return out


def hosts(view: View) -> list[HostInfo]:
    alive, counts = alive_hosts(view), jails_per_host(view)
    return [
        HostInfo(
            name,
            str(rec.get("address", "")),
            str(rec.get("subnet", "")),
            name in alive,
            counts.get(name, 0),
        )
        for name, rec in sorted(host_records(view).items())
    ]


def subnet_of(view: View, host: str) -> Network | None:
    return next((net for net, owner in subnet_claims(view).items() if owner == host), None)


def free_subnets(settings: Settings, taken: Iterable[Network]) -> Iterator[Network]:
    """The cluster CIDR's host subnets that no host holds, lowest first."""
    used = list(taken)
    for net in settings.cidr.subnets(new_prefix=settings.host_prefix):
        if not any(net.overlaps(t) for t in used):
            yield net


def routes(view: View, me: str) -> dict[Network, Address]:
    """Every other registered host's jail subnet -> that host's address. Routes
    follow registration, not liveness: a host that restarts keeps its traffic."""
    out: dict[Network, Address] = {}
    for name, rec in host_records(view).items():
        if name == me or not rec.get("subnet") or not rec.get("address"):
            continue
        out[ipaddress.ip_network(rec["subnet"])] = ipaddress.ip_address(rec["address"])
    return out


def published(view: View) -> Iterator[tuple[str, dict[str, Any]]]:
    """(jail, its ``dns/<jail>`` value) for every jail that publishes records."""
    for jail, e in under(view, DNS):
        yield jail, _json(e)


def claimed_names(view: View) -> set[str]:
    return {rest + "." for rest, _ in under(view, NAMES)}
