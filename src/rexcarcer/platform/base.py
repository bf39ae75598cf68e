"""What a platform provides: the jail runtime and every piece of OS knowledge the
features need (where unbound keeps its files, how a jail forwards its syslog,
how routes and forwarding are set, which tools must exist, how a process is
told alive).

Features and the engine only see ``Platform``; the OS modules implement it.
A platform is built from the host's configuration, read through
``PlatformConfig`` (the settings it uses), so this layer does not depend on
how the configuration is loaded.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Protocol

from rexcarcer.firewall.base import Firewall
from rexcarcer.platform.kinds import PlatformKind
from rexcarcer.runtime.base import Runtime

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class PublicRangeLike(Protocol):
    """A public range declared for jails (``rexcarcer.config.PublicRange``)."""

    @property
    def network(self) -> Network: ...
    @property
    def interface(self) -> str: ...


class PlatformConfig(Protocol):
    """The settings a platform reads (``rexcarcer.config.Config`` has them)."""

    @property
    def root(self) -> Path: ...
    @property
    def interface(self) -> str: ...
    @property
    def subnet(self) -> Network: ...
    @property
    def host_address(self) -> Address: ...
    @property
    def unbound_control(self) -> Path: ...
    @property
    def etcd(self) -> tuple[str, ...]: ...
    @property
    def cluster_cidr(self) -> Network | None: ...
    @property
    def public_ips(self) -> Sequence[PublicRangeLike]: ...
    @property
    def nat(self) -> bool: ...


class Flavour(StrEnum):
    REX = "rex"  # rex's own unbound, configured entirely by rex
    LOCAL_UNBOUND = "local_unbound"  # FreeBSD's base resolver


@dataclass(frozen=True, slots=True)
class UnboundLayout:
    """Where the DNS files live, per flavour of unbound."""

    flavour: Flavour
    workdir: Path  # unbound's directory:
    conf: Path  # the file unbound is started with (-c)
    server_conf: Path  # rex's server: settings (the same file as conf for REX)
    data: Path  # the persisted records, an include: file
    control: Path  # the control socket
    unbound: str  # the daemon
    checkconf: str  # its configuration checker
    log: Path  # the daemon's output under `rex host serve`
    state: Path  # `rex host serve`'s PIDs


@dataclass(frozen=True, slots=True)
class PeerIds:
    """Who is at the other end of a UNIX socket, as the kernel says."""

    uid: int
    gids: frozenset[int]
    pid: int | None = None


class RouteTable(Protocol):
    """The routes rex installs on the host (to the other hosts' jail subnets)."""

    def current(self) -> dict[Network, Address]:
        """The routes rex installed, as far as it can tell."""
        ...

    def add(self, net: Network, via: Address) -> None: ...

    def delete(self, net: Network) -> None:
        """Remove the route; already gone is fine."""
        ...


class Platform(Protocol):
    @property
    def kind(self) -> PlatformKind: ...

    @property
    def runtime(self) -> Runtime: ...

    @property
    def routes(self) -> RouteTable: ...

    @property
    def firewall(self) -> Firewall:
        """rex's own part of the host's firewall (nftables table ``inet
        rexcarcer``, pf anchors ``rexcarcer/*``); never anything else."""
        ...

    @property
    def collector_freebind(self) -> bool:
        """Whether the log collector may bind the jail-subnet address before it
        exists (IP_FREEBIND on Linux; FreeBSD's rsyslog has no such option)."""
        ...

    def tools(self) -> tuple[str, ...]:
        """The commands this platform needs (``rex doctor``)."""
        ...

    def host_addresses(self) -> tuple[Address, ...]:
        """Every address on this host's interfaces (loopback included), as the
        kernel lists them now."""
        ...

    def unbound_layout(self) -> UnboundLayout: ...

    def write_syslog_forwarding(self, root: Path, target: Address, port: int) -> None:
        """Write the files that make a jail (root ``root``) forward its syslog to
        ``target:port``, through the race-free jail-root module."""
        ...

    def enable_forwarding(self) -> None:
        """Let jail traffic between hosts pass through this host."""
        ...

    def process_start(self, pid: int) -> int | None:
        """An opaque start time of ``pid`` (PID + start time name one process
        for the life of the system), or None when no such process runs."""
        ...

    def process_alive(self, pid: int, start: int | None = None) -> bool:
        """Whether ``pid`` runs (and, with ``start``, is the same process)."""
        ...

    def peer_ids(self, sock: socket.socket) -> PeerIds:
        """The credentials of a connected UNIX socket's peer (the agent's socket)."""
        ...


def jail_routes(config: PlatformConfig) -> tuple[Network, ...]:
    """What a jail reaches through its host: in a cluster, the other hosts'
    jail subnets (the cluster CIDR); everything else only with egress NAT on
    (``nat``: a default route to the host, which masquerades it). Without
    NAT never a default route: a jail's traffic to the world would leave
    with an address nobody routes back."""
    out: list[Network] = []
    if config.etcd and config.cluster_cidr is not None:
        out.append(config.cluster_cidr)
    if config.nat:
        out.append(ipaddress.ip_network("0.0.0.0/0" if config.subnet.version == 4 else "::/0"))
    return tuple(out)
