"""The admission of a ``.rex`` file's ``IP`` and ``HOSTNAME``, before ``rex up``
(or ``rex plan``) changes anything.

A fixed ``IP`` must lie in this host's jail subnet or in a public range the
host's configuration declares for jails (``public_ips``), and be nobody else's:
not loopback, link-local, multicast, unspecified or reserved, not an address of
this host, not an etcd endpoint's, not another cluster host's, not in another
host's jail subnet. A jail holding such an address would answer for it: on a
host where jail addresses are aliases (FreeBSD) or routed to the bridge
(Linux, a public address), the host would hand the jail the traffic meant for
etcd or a peer.

A ``HOSTNAME`` must not lie in ``host.<zone>`` (the hosts' names),
``svc.<zone>`` (the services') or name another jail in ``jail.<zone>``
(dns/records.check_hostname has the rules; the jail's certificate and DNS
records carry that name).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

from rexcarcer.config import Config, PublicRange
from rexcarcer.dns import DnsError
from rexcarcer.dns.records import check_hostname, check_zone
from rexcarcer.host import Host
from rexcarcer.netpolicy import AddressRefused, HostnameRefused
from rexcarcer.netpolicy.facts import Address, NetFacts, Network, gather
from rexcarcer.rexfile.ast import Rexfile

# RFC 1122 3.2.1.3 "this network" (Python's is_unspecified is 0.0.0.0 only)
_THIS_NETWORK = ipaddress.ip_network("0.0.0.0/8")


def kind_problem(ip: Address) -> str | None:
    """Why no host may give ``ip`` to a jail, whatever its configuration."""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return "is an IPv4-mapped IPv6 address (::ffff:0:0/96)"
    checks = (
        (ip.is_unspecified, "is the unspecified address"),
        (ip.is_loopback, "is a loopback address"),
        (ip.is_link_local, "is a link-local address"),
        (ip.is_multicast, "is a multicast address"),
        (ip.is_reserved, "is in a reserved range"),
        (ip.version == 4 and ip in _THIS_NETWORK, "is in 0.0.0.0/8 (this network)"),
    )
    return next((why for bad, why in checks if bad), None)


def _edge_problem(ip: Address, net: Network, what: str) -> str | None:
    """The network and broadcast addresses of an IPv4 range with room for hosts."""
    if ip.version == 4 and net.prefixlen <= 30:
        if ip == net.network_address:
            return f"is the network address of {what} {net}"
        if ip == net.broadcast_address:
            return f"is the broadcast address of {what} {net}"
    return None


def address_problem(
    ip: Address,
    *,
    subnet: Network,
    gateway: Address,
    public: Sequence[PublicRange],
    facts: NetFacts,
) -> str | None:
    """Why a jail may not have ``ip`` on this host, or None. Pure."""
    problem = kind_problem(ip)
    if problem is not None:
        return problem
    if ip == gateway:
        return f"is this host's own address in the jail subnet {subnet}"
    # Addresses jails hold are on the host's interfaces too where jails are
    # aliases (FreeBSD): the IPAM check that follows says whose they are (and
    # lets a jail's own address through when `rex up` runs again).
    held = {a for a, _ in facts.held}
    if ip in set(facts.own) - held:
        return "is an address of this host"
    for ep in facts.etcd:
        if ip in ep.addresses:
            return f"is the address of the etcd endpoint {ep.url}"
    for peer in facts.peers:
        if ip == peer.address:
            return f"is the address of cluster host {peer.name}"
        if peer.subnet is not None and ip in peer.subnet:
            return f"lies in cluster host {peer.name}'s jail subnet {peer.subnet}"
    if ip in subnet:
        return _edge_problem(ip, subnet, "the jail subnet")
    found = next((r for r in public if ip in r.network), None)
    if found is not None:
        return _edge_problem(ip, found.network, "the public range")
    declared = ", ".join(str(r) for r in public) or "none declared"
    return (
        f"lies outside this host's jail subnet {subnet} and every public range declared "
        f"for jails (public_ips: {declared})"
    )


def check_address(config: Config, facts: NetFacts, rexfile: Rexfile) -> None:
    if rexfile.ip is None:
        return
    problem = address_problem(
        rexfile.ip.ip, subnet=config.subnet, gateway=config.host_address,
        public=config.public_ips, facts=facts,
    )  # fmt: skip
    if problem is not None:
        raise AddressRefused(
            f"{rexfile.display}: IP {rexfile.ip} is refused: {rexfile.ip.ip} {problem}",
            hint=f"use an address of the jail subnet {config.subnet} or of a public range "
            "declared for jails (public_ips / REX_PUBLIC_IPS, e.g. 198.51.100.16/28@em0), "
            "or leave IP out so that rex assigns one",
        )


def check_hostname_of(config: Config, rexfile: Rexfile, name: str) -> None:
    if rexfile.hostname is None:
        return
    try:
        check_hostname(rexfile.hostname, name, check_zone(config.zone))
    except DnsError as exc:
        raise HostnameRefused(f"{rexfile.display}: {exc.message}", hint=exc.hint) from exc


def admit(host: Host, rexfile: Rexfile, name: str) -> None:
    """Refuse ``rexfile`` for jail ``name`` on this host; reads only."""
    check_hostname_of(host.config, rexfile, name)
    if rexfile.ip is not None:
        check_address(host.config, gather(host), rexfile)
