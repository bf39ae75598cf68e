"""The ruleset rex owns on a host. Pure values, no OS knowledge.

Every value here ends up in a firewall, and much of it comes from what a jail's
owner wrote (``PUBLISH``), so each record checks itself when it is made: a
``Ruleset`` that exists is valid, and the renderers (nft.py, pf.py) never see
a port 0, a jail name with a quote in it or an interface name with a space.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from itertools import combinations

from rexcarcer.firewall import FirewallError
from rexcarcer.names import jail_name_problem
from rexcarcer.rexfile.ast import Proto

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
PortSpec = tuple[Proto, int]

# The host's control ports a jail must never reach (Guard.ports).
ETCD_CLIENT_PORT = 2379  # etcd(1) --listen-client-urls default
ETCD_PEER_PORT = 2380  # etcd(1) --listen-peer-urls default
UNBOUND_CONTROL_PORT = 8953  # unbound.conf(5): control-port default
AGENT_API_PORT = 7443  # `rex agent --api-port` default (cli/cluster_cmds.py)
CONTROL_PORTS: tuple[PortSpec, ...] = tuple(
    (Proto.TCP, p) for p in (ETCD_CLIENT_PORT, ETCD_PEER_PORT, AGENT_API_PORT, UNBOUND_CONTROL_PORT)
)

# What a jail always reaches on its host: the resolver rex writes into its
# resolv.conf (dns/layout.py DNS_PORT) and the log collector (logs/collector.py
# LOG_PORT). A guard may not close them.
DNS_PORT = 53
SYSLOG_PORT = 514
HOST_SERVICES: tuple[PortSpec, ...] = (
    (Proto.UDP, DNS_PORT),
    (Proto.TCP, DNS_PORT),
    (Proto.UDP, SYSLOG_PORT),
)

# Interface names as both kernels take them: Linux IFNAMSIZ and FreeBSD
# IFNAMSIZ are 16 with the NUL. The first character is a letter because
# pfctl's parse.y refuses anything else in "(ifname)" ("invalid interface
# name"); no quotes, braces, spaces or '!' can reach pf.conf text this way.
_IFACE = re.compile(r"[A-Za-z][A-Za-z0-9_.-]{0,14}")
# Words pf.conf(5) reads as keywords where an interface name may stand.
_IFACE_KEYWORDS = frozenset({"all", "any", "self", "on", "from", "to", "port", "proto",
                             "inet", "inet6", "no-route", "urpf-failed"})  # fmt: skip

_HINT_PORT = "a port is a number from 1 to 65535"


def check_port(port: object, what: str) -> int:
    # bool is an int subclass: True would otherwise pass as port 1
    if not isinstance(port, int) or isinstance(port, bool) or not 1 <= port <= 65535:
        raise FirewallError(f"{what}: {port!r} is not a port", hint=_HINT_PORT)
    return port


def check_proto(proto: object, what: str) -> Proto:
    if not isinstance(proto, Proto):
        raise FirewallError(f"{what}: {proto!r} is not a protocol", hint="use tcp or udp")
    return proto


def check_iface(name: object, what: str) -> str:
    if not isinstance(name, str) or not _IFACE.fullmatch(name) or name in _IFACE_KEYWORDS:
        raise FirewallError(
            f"{what}: {name!r} is not an interface name",
            hint="1-15 letters, digits, '_', '.' or '-', starting with a letter",
        )
    return name


def check_jail(name: object) -> str:
    problem = jail_name_problem(name) if isinstance(name, str) else "it is not a string"
    if problem is not None:
        raise FirewallError(f"bad jail name in a firewall rule: {problem}")
    assert isinstance(name, str)
    return name


def _check_address(addr: object, what: str) -> Address:
    if not isinstance(addr, ipaddress.IPv4Address | ipaddress.IPv6Address):
        raise FirewallError(f"{what}: {addr!r} is not an IP address")
    if addr.is_unspecified or addr.is_multicast:
        raise FirewallError(f"{what}: {addr} is not a unicast address")
    return addr


def _check_network(net: object, what: str) -> Network:
    if not isinstance(net, ipaddress.IPv4Network | ipaddress.IPv6Network):
        raise FirewallError(f"{what}: {net!r} is not a network (address/prefix)")
    return net


def _family(addr: Address | Network) -> str:
    return "IPv4" if addr.version == 4 else "IPv6"


@dataclass(frozen=True, slots=True)
class PortForward:
    """``PUBLISH host_port:jail_port/proto [ON host_addr]`` of one jail.

    ``host_addr`` None: every address of the host (not its loopback)."""

    jail: str
    proto: Proto
    host_port: int
    jail_addr: Address
    jail_port: int
    host_addr: Address | None = None

    def __post_init__(self) -> None:
        check_jail(self.jail)
        what = f"jail {self.jail}: published port"
        check_proto(self.proto, what)
        check_port(self.host_port, f"{what} (host side)")
        check_port(self.jail_port, f"{what} (jail side)")
        jail_addr = _check_address(self.jail_addr, f"jail {self.jail}: address")
        if jail_addr.is_loopback:
            raise FirewallError(f"jail {self.jail}: cannot publish to loopback {jail_addr}")
        if self.host_addr is not None:
            host = _check_address(self.host_addr, f"{what} ON")
            if host.version != jail_addr.version:
                raise FirewallError(
                    f"{what}: host address {host} is {_family(host)} but the jail's "
                    f"address {jail_addr} is {_family(jail_addr)}",
                    hint="publish on an address of the jail's family",
                )
            if host.is_loopback:
                # DNAT from 127.0.0.1 to another host is a martian to Linux
                # (route_localnet) and pf never sees loopback rdr from outside.
                raise FirewallError(
                    f"{what}: cannot publish on loopback {host}",
                    hint="publish on one of the host's addresses, or leave ON out",
                )

    @property
    def label(self) -> str:
        on = f"{self.host_addr}:" if self.host_addr is not None else ""
        return f"{self.proto}/{on}{self.host_port}"

    def overlaps(self, other: PortForward) -> bool:
        """True when both would claim the same packets on the host."""
        if (self.proto, self.host_port, self.jail_addr.version) != (
            other.proto, other.host_port, other.jail_addr.version,
        ):  # fmt: skip
            return False
        return (
            self.host_addr is None or other.host_addr is None or self.host_addr == other.host_addr
        )

    def sort_key(self) -> tuple[str, str, int, str]:
        return (self.jail, str(self.proto), self.host_port, str(self.host_addr or ""))


@dataclass(frozen=True, slots=True)
class Masquerade:
    """Egress NAT for the jail subnet: its traffic leaves with the host's address.

    ``out_iface`` None: on every interface (Linux; pf needs an interface).
    Traffic to the subnet itself and to ``keep`` (the cluster's jail networks,
    reached by routes with their own addresses) is never translated."""

    subnet: Network
    out_iface: str | None = None
    keep: tuple[Network, ...] = ()

    def __post_init__(self) -> None:
        _check_network(self.subnet, "masquerade subnet")
        if self.out_iface is not None:
            check_iface(self.out_iface, "masquerade interface")
        keep = tuple(sorted({_check_network(n, "masquerade keep") for n in self.keep}, key=str))
        for net in keep:
            if net.version != self.subnet.version:
                raise FirewallError(
                    f"masquerade of {self.subnet}: {net} is {_family(net)}, the subnet is "
                    f"{_family(self.subnet)}"
                )
        object.__setattr__(self, "keep", keep)


@dataclass(frozen=True, slots=True)
class Guard:
    """Traffic from the jails to the host's control ports (``ports``, on any of
    the host's addresses) and to ``addresses`` (other hosts, etcd endpoints) is
    dropped. DNS and syslog to the host stay open (HOST_SERVICES).

    ``bridge`` is the interface the jails' traffic arrives on (Linux: rex0);
    ``subnet`` the jail subnet; ``sources`` other networks jails send from
    (the public ranges declared for jails, the other hosts' jail subnets). A
    jail may forge its source address, so Linux matches the bridge or a
    source network; pf, where jails are aliases and their traffic to the host
    is local, matches the source networks."""

    subnet: Network
    bridge: str
    ports: tuple[PortSpec, ...] = CONTROL_PORTS
    addresses: tuple[Address, ...] = ()
    sources: tuple[Network, ...] = ()

    def __post_init__(self) -> None:
        _check_network(self.subnet, "guard subnet")
        check_iface(self.bridge, "guard bridge")
        ports: set[PortSpec] = set()
        for spec in self.ports:
            if not isinstance(spec, tuple) or len(spec) != 2:
                raise FirewallError(f"guard port {spec!r} is not (proto, port)")
            proto = check_proto(spec[0], "guard port")
            port = check_port(spec[1], "guard port")
            if (proto, port) in HOST_SERVICES or port == DNS_PORT:
                raise FirewallError(
                    f"guard: {proto}/{port} is DNS or syslog, which jails must reach",
                    hint="jails resolve names and send logs through the host",
                )
            ports.add((proto, port))
        object.__setattr__(self, "ports", tuple(sorted(ports, key=lambda s: (str(s[0]), s[1]))))
        addrs = {_check_address(a, "guard address") for a in self.addresses}
        for addr in addrs:
            if addr in self.subnet:
                # the host's own address in the subnet serves DNS and syslog
                raise FirewallError(
                    f"guard: {addr} is inside the jail subnet {self.subnet}",
                    hint="list other hosts' and etcd's addresses, not the jail network's",
                )
        object.__setattr__(self, "addresses", _sorted_addresses(addrs))
        # An address may lie in a source network: another host's own address in
        # its jail subnet is closed to jails, and that host does not send from it.
        nets = {_check_network(n, "guard source") for n in self.sources} - {self.subnet}
        object.__setattr__(self, "sources", tuple(sorted(nets, key=lambda n: (n.version, n))))

    def networks_of(self, version: int) -> tuple[Network, ...]:
        """The networks jails send from in one family: the subnet first."""
        nets = (self.subnet, *self.sources)
        return tuple(n for n in nets if n.version == version)

    def ports_of(self, proto: Proto) -> tuple[int, ...]:
        return tuple(p for pr, p in self.ports if pr is proto)

    def addresses_of(self, version: int) -> tuple[Address, ...]:
        return tuple(a for a in self.addresses if a.version == version)


def _sorted_addresses(addrs: Iterable[Address]) -> tuple[Address, ...]:
    return tuple(sorted(addrs, key=lambda a: (a.version, int(a))))


@dataclass(frozen=True, slots=True)
class Ruleset:
    """Everything rex wants in the host's firewall. Forwards are kept sorted,
    so two rulesets that say the same thing compare equal."""

    forwards: tuple[PortForward, ...] = ()
    masquerade: Masquerade | None = None
    guard: Guard | None = None
    _jail_nets: tuple[Network, ...] = field(default=(), init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        forwards = tuple(self.forwards)
        for f in forwards:
            if not isinstance(f, PortForward):
                raise FirewallError(f"not a PortForward: {f!r}")
        if self.masquerade is not None and not isinstance(self.masquerade, Masquerade):
            raise FirewallError(f"not a Masquerade: {self.masquerade!r}")
        if self.guard is not None and not isinstance(self.guard, Guard):
            raise FirewallError(f"not a Guard: {self.guard!r}")
        for a, b in combinations(forwards, 2):
            if a.overlaps(b):
                raise _conflict(a, b)
        object.__setattr__(self, "forwards", tuple(sorted(forwards, key=PortForward.sort_key)))
        nets = {x.subnet for x in (self.masquerade, self.guard) if x is not None}
        object.__setattr__(self, "_jail_nets", tuple(sorted(nets, key=str)))

    @property
    def jail_nets(self) -> tuple[Network, ...]:
        """The jail subnets this ruleset knows (from the masquerade and the
        guard): a connection from one of them to a published port of the same
        host needs its source rewritten too (the hairpin, nft.py)."""
        return self._jail_nets

    @property
    def empty(self) -> bool:
        return not self.forwards and self.masquerade is None and self.guard is None

    def jails(self) -> tuple[str, ...]:
        return tuple(sorted({f.jail for f in self.forwards}))


def _conflict(a: PortForward, b: PortForward) -> FirewallError:
    where = str(a.host_addr or b.host_addr or "every host address")
    if a.jail == b.jail:
        what = f"jail {a.jail} publishes {a.proto} port {a.host_port} twice on {where}"
    else:
        first, second = sorted((a.jail, b.jail))
        what = f"jails {first} and {second} both publish {a.proto} port {a.host_port} on {where}"
    return FirewallError(
        what,
        hint="a host port goes to one jail: give one of them another host port "
        "(PUBLISH <hostport>:<port>) or another address (ON <address>)",
    )
