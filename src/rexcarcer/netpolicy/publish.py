"""Published ports and egress NAT: what may be published, and what the host's
ruleset holds for them.

Admission (``check``, from ``rex up`` and ``rex plan`` before anything
changes), for each ``PUBLISH HOSTPORT:PORT[/proto] [ON ADDRESS]``:

- HOSTPORT below 1024 only when the configuration allows it
  (``publish_allow``): those ports are the host's own services';
- never a control port of the host (the agent API, etcd, unbound control:
  the guard's ports), nor DNS or syslog on the host's jail-subnet address
  (the jails' resolver and log collector; DNAT would take their traffic);
- ON ADDRESS must be one of the host's addresses (its interfaces as the
  platform lists them, not loopback, not a jail's), of the jail's family;
- no other jail of this host publishes the same port (same protocol, and the
  same address or one of the two on every address), running or not: a
  stopped jail keeps its ports for when it starts again;
- on FreeBSD the loaded pf ruleset hooks rex's anchors (pf.conf(5) ANCHORS:
  rules in an anchor are evaluated only where the main ruleset calls it).

The ruleset (``PublishSource``): the forwards of every jail of this host that
runs now, and the masquerade of the jail subnet when ``nat`` is on.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from rexcarcer.config import Config
from rexcarcer.firewall.rules import (
    DNS_PORT,
    SYSLOG_PORT,
    Masquerade,
    Network,
    PortForward,
)
from rexcarcer.host import Host
from rexcarcer.model.jail import JailRecord, PublishEntry
from rexcarcer.netpolicy import HooksMissing, PortRefused, PortTaken, PublishAddressRefused
from rexcarcer.netpolicy.facts import Address, NetFacts
from rexcarcer.netpolicy.guard import control_ports
from rexcarcer.rexfile.ast import Proto, Publish, Rexfile
from rexcarcer.runtime.base import JailState
from rexcarcer.state import records

log = logging.getLogger("rexcarcer.netpolicy")

PF_HOOKS_HINT = (
    "add these lines to /etc/pf.conf and reload it (pfctl -f /etc/pf.conf); "
    "docs/freebsd.md shows where"
)


def local_records(host: Host) -> list[JailRecord]:
    """The jail records of this host (in a cluster, the store holds every host's)."""
    config = host.config
    return [r for r in records.list_jails(host.store)
            if not config.etcd or r.host == config.host]  # fmt: skip


def entry_of(p: Publish) -> PublishEntry:
    return PublishEntry(p.host_port, p.port, str(p.proto), str(p.on) if p.on is not None else None)


def entries(rexfile: Rexfile) -> tuple[PublishEntry, ...]:
    return tuple(entry_of(p) for p in rexfile.publish)


def _overlap(a: PublishEntry, b: PublishEntry) -> bool:
    if (a.proto, a.host_port) != (b.proto, b.host_port):
        return False
    return a.on is None or b.on is None or a.on == b.on


def taken_by(host: Host, entry: PublishEntry, name: str) -> str | None:
    """The other jail of this host that publishes what ``entry`` would, if any."""
    for rec in local_records(host):
        if rec.name != name and any(_overlap(entry, p) for p in rec.publish):
            return rec.name
    return None


def _port_problem(config: Config, facts: NetFacts, p: Publish) -> str | None:
    if not config.publish_allowed(p.host_port):
        return (f"host port {p.host_port} is below 1024 and not allowed in the configuration "
                "(publish_allow)")  # fmt: skip
    if (Proto.TCP, p.host_port) in control_ports(config, facts, ()):
        return f"host port {p.host_port}/tcp is a control port of this host, which no jail gets"
    if p.host_port in (DNS_PORT, SYSLOG_PORT) and p.on in (None, config.host_address):
        return (f"host port {p.host_port} serves DNS or syslog to the jails on "
                f"{config.host_address}")  # fmt: skip
    return None


def own_addresses(facts: NetFacts) -> list[Address]:
    """The addresses ON may name: the host's own, not loopback, not a jail's."""
    held = {a for a, _ in facts.held}
    return [a for a in facts.own if not a.is_loopback and a not in held]


def check(host: Host, rexfile: Rexfile, name: str, facts: NetFacts) -> None:
    """Refuse ``rexfile``'s PUBLISH lines (and NAT) for jail ``name``; reads only."""
    config = host.config
    if rexfile.publish or config.nat:
        missing = host.platform.firewall.missing_hooks()
        if missing:
            what = "PUBLISH" if rexfile.publish else "egress NAT (nat = true)"
            raise HooksMissing(
                f"{rexfile.display}: {what} needs pf to evaluate rex's anchors, and the "
                f"loaded pf ruleset lacks: {'; '.join(missing)}",
                hint=PF_HOOKS_HINT,
            )
    family = rexfile.ip.ip.version if rexfile.ip is not None else config.subnet.version
    ours = own_addresses(facts)
    for p in rexfile.publish:
        where = f"{rexfile.display}:{p.pos.line}: PUBLISH {p}"
        problem = _port_problem(config, facts, p)
        if problem is not None:
            allow = (
                ""
                if config.publish_allowed(p.host_port)
                else (f'allow it with publish_allow = "{p.host_port}" (REX_PUBLISH_ALLOW), or ')
            )
            raise PortRefused(f"{where} is refused: {problem}",
                              hint=f"{allow}publish on a host port from 1024 up")  # fmt: skip
        if p.on is not None and (p.on not in ours or p.on.version != family):
            why = ("is not one of this host's addresses" if p.on not in ours
                   else f"is IPv{p.on.version} and the jail's address IPv{family}")  # fmt: skip
            shown = ", ".join(str(a) for a in ours) or "none"
            raise PublishAddressRefused(f"{where} is refused: {p.on} {why}",
                                        hint=f"this host's addresses: {shown}; or leave ON "
                                        "out to publish on all of them")  # fmt: skip
        other = taken_by(host, entry_of(p), name)
        if other is not None:
            raise PortTaken(
                f"{where} is refused: jail {other} already publishes {p.proto} port "
                f"{p.host_port}" + (f" on {p.on}" if p.on else ""),
                hint="a host port goes to one jail: choose another host port or ON address, "
                f"or `rex destroy {other}`",
            )


# -- the ruleset --------------------------------------------------------------------


def forwards_of(rec: JailRecord) -> list[PortForward]:
    if rec.address is None:
        return []
    return [PortForward(rec.name, Proto(p.proto), p.host_port, rec.address.ip, p.port,
                        _addr(p.on)) for p in rec.publish]  # fmt: skip


def _addr(text: str | None) -> Address | None:
    return ipaddress.ip_address(text) if text else None


def _first_wins(forwards: Iterable[PortForward]) -> list[PortForward]:
    """Admission keeps ports apart; two `rex up`s racing past it must still not
    make the whole ruleset (and with it the guard) unloadable."""
    out: list[PortForward] = []
    for f in forwards:
        clash = next((o for o in out if o.overlaps(f)), None)
        if clash is None:
            out.append(f)
        else:
            log.warning("firewall: jail %s's %s not published: jail %s has it",
                        f.jail, f.label, clash.jail)  # fmt: skip
    return out


def masquerade_for(config: Config) -> Masquerade | None:
    """The jail subnet masqueraded out of the uplink, when ``nat`` is on. Traffic
    to the cluster's jail networks and the public ranges keeps its source."""
    if not config.nat:
        return None
    keep: list[Network] = [r.network for r in config.public_ips
                           if r.network.version == config.subnet.version]  # fmt: skip
    if config.etcd and config.cluster_cidr is not None:
        keep.append(config.cluster_cidr)
    keep = [n for n in keep if n.version == config.subnet.version]
    return Masquerade(config.subnet, config.nat_interface or None, tuple(keep))


@dataclass(frozen=True)
class PublishSource:
    """The RuleSource of published ports and NAT (netpolicy/policy.py).
    ``without``: jails whose ports go now (their stop has begun)."""

    without: frozenset[str] = frozenset()

    def forwards(self, host: Host) -> Sequence[PortForward]:
        recs = [r for r in local_records(host) if r.publish and r.name not in self.without]
        if not recs:
            return []
        status = host.runtime.status([r.name for r in recs])
        running = [r for r in recs if status[r.name].state is JailState.RUNNING]
        return _first_wins(f for r in sorted(running, key=lambda r: r.name)
                           for f in forwards_of(r))  # fmt: skip

    def masquerade(self, host: Host) -> Masquerade | None:
        return masquerade_for(host.config)
