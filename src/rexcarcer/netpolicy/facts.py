"""What the network policy looks at, read once per decision.

Everything here comes from the host (its interfaces, through the platform), its
configuration (etcd endpoints) and the store (the other hosts, the addresses
jails hold), never from a jail.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

from rexcarcer import ipam
from rexcarcer.cluster import model
from rexcarcer.host import Host
from rexcarcer.model import keys

log = logging.getLogger("rexcarcer.netpolicy")

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

ETCD_CLIENT_PORT = 2379  # etcd(1) --listen-client-urls default


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One etcd endpoint and the addresses its host name stands for."""

    url: str
    addresses: tuple[Address, ...]
    port: int


@dataclass(frozen=True, slots=True)
class Peer:
    """Another host of the cluster: its address and its jail subnet."""

    name: str
    address: Address | None
    subnet: Network | None

    @property
    def gateway(self) -> Address | None:
        """Its own address in its jail subnet (the first, as config.host_address)."""
        if self.subnet is None:
            return None
        first = next(iter(self.subnet.hosts()), None)
        return ipaddress.ip_address(str(first)) if first is not None else None


@dataclass(frozen=True, slots=True)
class NetFacts:
    own: tuple[Address, ...]  # on this host's interfaces, and its jail-subnet address
    etcd: tuple[Endpoint, ...] = ()
    peers: tuple[Peer, ...] = ()
    held: tuple[tuple[Address, str], ...] = ()  # (address, jail) claimed in ipam/
    api_ports: tuple[int, ...] = ()  # what this host's agent serves its API on now


def endpoint(url: str) -> Endpoint:
    """An etcd endpoint URL's addresses: the literal, or what its name resolves
    to (getaddrinfo(3), as the etcd client would connect). A name that does not
    resolve yields none: nothing reaches it then, jails included."""
    parts = urlsplit(url if "://" in url else f"http://{url}")
    name = parts.hostname or ""
    try:
        port = parts.port or ETCD_CLIENT_PORT
    except ValueError:
        port = ETCD_CLIENT_PORT
    try:
        return Endpoint(url, (ipaddress.ip_address(name),), port)
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(name, port, type=socket.SOCK_STREAM)
    except OSError as exc:
        log.warning("etcd endpoint %s: cannot resolve %s: %s", url, name, exc)
        return Endpoint(url, (), port)
    found = {ipaddress.ip_address(str(i[4][0]).split("%", 1)[0]) for i in infos}
    return Endpoint(url, tuple(sorted(found, key=lambda a: (a.version, int(a)))), port)


def peers(host: Host) -> tuple[Peer, ...]:
    """The other hosts in the store's ``hosts/`` and ``subnets/`` (none on a
    single host: nothing writes those keys there)."""
    view = {e.key: e for prefix in (keys.HOSTS, keys.SUBNETS) for e in host.store.list(prefix)}
    me = host.config.host
    subnets: dict[str, Network] = {}
    for net, owner in model.subnet_claims(view).items():
        subnets.setdefault(owner, net)
    out: dict[str, Peer] = {}
    for name, rec in model.host_records(view).items():
        if name == me:
            continue
        addr = _address(rec.get("address"))
        sub = _network(rec.get("subnet")) or subnets.get(name)
        out[name] = Peer(name, addr, sub)
    for name, net in subnets.items():  # a subnet claimed by a host not (yet) registered
        if name != me and name not in out:
            out[name] = Peer(name, None, net)
    return tuple(out[n] for n in sorted(out))


def served_api_ports(host: Host) -> tuple[int, ...]:
    """The port this host's agent advertises in its liveness key (``rex agent
    --api-port``), which may differ from the configured ``api_port``."""
    entry = host.store.get(model.alive_key(host.config.host))
    if entry is None:
        return ()
    try:
        url = entry.json().get("api")
        port = urlsplit(str(url)).port if url else None
    except (ValueError, AttributeError):
        return ()
    return (port,) if port else ()


def _address(value: object) -> Address | None:
    try:
        return ipaddress.ip_address(str(value)) if value else None
    except ValueError:
        return None


def _network(value: object) -> Network | None:
    try:
        return ipaddress.ip_network(str(value)) if value else None
    except ValueError:
        return None


def gather(host: Host) -> NetFacts:
    config = host.config
    own = {*host.platform.host_addresses(), config.host_address}
    held = tuple((ipaddress.ip_address(a), j) for a, j in sorted(ipam.taken(host.store).items()))
    return NetFacts(
        own=tuple(sorted(own, key=lambda a: (a.version, int(a)))),
        etcd=tuple(endpoint(url) for url in config.etcd),
        peers=peers(host),
        held=held,
        api_ports=served_api_ports(host),
    )
