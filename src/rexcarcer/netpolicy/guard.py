"""This host's firewall Ruleset: the Guard that keeps jails and build steps off
what runs the cluster, plus what other features forward (inputs).

Dropped, for connections a jail opens (from the jail subnet, the bridge on
Linux, the public ranges declared for jails, the other hosts' jail subnets):

- to any address of this host: the agent's API port (``api_port``, and the one
  the agent advertises when ``rex agent --api-port`` chose another), etcd's
  client and peer ports (2379, 2380 and every endpoint's port), unbound's
  control port (8953, unbound.conf(5)'s default, and the configured
  ``control-port`` when unbound's control interface is TCP);
- to the other hosts' addresses (their cluster and jail-subnet addresses) and
  the etcd endpoints' addresses: everything.

DNS (53) and syslog (514/udp) to the host stay open: a Guard cannot close them
(firewall/rules.py), and the jails' resolv.conf and syslog point at the host.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from pathlib import Path

from rexcarcer.config import Config
from rexcarcer.errors import ConfigError
from rexcarcer.firewall.rules import (
    ETCD_CLIENT_PORT,
    ETCD_PEER_PORT,
    UNBOUND_CONTROL_PORT,
    Guard,
    Masquerade,
    PortForward,
    PortSpec,
    Ruleset,
)
from rexcarcer.netpolicy.facts import Address, NetFacts, Network
from rexcarcer.rexfile.ast import Proto

# unbound.conf(5), remote-control: clause
_ENABLE = re.compile(r'^\s*control-enable:\s*"?yes\b', re.M)
_IFACE = re.compile(r'^\s*control-interface:\s*"?([^"\s#]+)', re.M)
_PORT = re.compile(r'^\s*control-port:\s*"?(\d+)', re.M)


def unbound_tcp_port(text: str) -> int | None:
    """The TCP port unbound's control listens on per this unbound.conf text, or
    None when control is off or only on a unix socket. unbound.conf(5):
    control-interface is an IP address or "an absolute path ... a unix local
    named pipe" (default 127.0.0.1 and ::1), control-port defaults to 8953."""
    if not _ENABLE.search(text):
        return None
    ifaces = _IFACE.findall(text)
    if ifaces and all(i.startswith("/") for i in ifaces):
        return None
    ports = _PORT.findall(text)
    return int(ports[-1]) if ports else UNBOUND_CONTROL_PORT


def unbound_ports(confs: Iterable[Path]) -> tuple[int, ...]:
    """The TCP control ports of the unbound configuration files that exist."""
    out = []
    for path in confs:
        try:
            text = path.read_text(errors="replace")
        except OSError:
            continue  # not there (no unbound set up) or unreadable: nothing to add
        port = unbound_tcp_port(text)
        if port is not None:
            out.append(port)
    return tuple(out)


def control_ports(config: Config, facts: NetFacts, unbound: Sequence[int]) -> tuple[PortSpec, ...]:
    ports = {config.api_port, ETCD_CLIENT_PORT, ETCD_PEER_PORT, UNBOUND_CONTROL_PORT, *unbound}
    ports |= {ep.port for ep in facts.etcd} | set(facts.api_ports)
    return tuple((Proto.TCP, p) for p in sorted(ports))


def _sources(config: Config, facts: NetFacts) -> tuple[Network, ...]:
    peers = [p.subnet for p in facts.peers if p.subnet is not None]
    return (*(r.network for r in config.public_ips), *peers)


def _closed(config: Config, facts: NetFacts) -> tuple[Address, ...]:
    """The other hosts' and the etcd endpoints' addresses, as seen from a jail;
    its own host's jail network serves DNS and syslog (and is guarded by port),
    and a jail cannot reach the host's loopback at all."""
    found: set[Address] = {a for ep in facts.etcd for a in ep.addresses}
    for peer in facts.peers:
        found |= {a for a in (peer.address, peer.gateway) if a is not None}
    return tuple(a for a in found if a not in config.subnet and not a.is_loopback)


def _check_public(config: Config, facts: NetFacts) -> None:
    """A public range is jail space to the guard: a cluster host or an etcd
    endpoint in one would be cut off from this host's control ports."""
    named = [(f"etcd endpoint {ep.url}", a) for ep in facts.etcd for a in ep.addresses]
    named += [(f"cluster host {p.name}", p.address) for p in facts.peers if p.address is not None]
    for rng in config.public_ips:
        for what, addr in named:
            if addr in rng.network:
                raise ConfigError(
                    f"the public range {rng} declared for jails holds the address {addr} of {what}",
                    hint="declare only addresses jails get in public_ips (REX_PUBLIC_IPS): "
                    "the firewall treats traffic from them as a jail's",
                )


def guard_for(config: Config, facts: NetFacts, unbound: Sequence[int] = ()) -> Guard:
    _check_public(config, facts)
    return Guard(
        subnet=config.subnet,
        bridge=config.interface,
        ports=control_ports(config, facts, unbound),
        addresses=_closed(config, facts),
        sources=_sources(config, facts),
    )


def build_ruleset(
    guard: Guard,
    forwards: Sequence[PortForward] = (),
    masquerade: Masquerade | None = None,
) -> Ruleset:
    """The whole of rex's part of the firewall: the guard, and what the features
    that publish ports or translate addresses ask for."""
    return Ruleset(tuple(forwards), masquerade, guard)
