"""What a jail's certificate says, and when it must be renewed. Pure, and free of
``cryptography``: ``rex start`` of a jail whose certificate is still good decides
so without importing it (about 60 ms of start-up, bench/bench_identity.py).

For jail ``web1`` at 203.0.113.12 with ``HOSTNAME docs.example.com`` and
``SERVICE renderer PORT 1234`` in zone ``rex.internal``, the names are
``web1.jail.rex.internal``, ``docs.example.com``, ``renderer.svc.rex.internal``
and the address 203.0.113.12.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from rexcarcer.model.jail import JailRecord
from rexcarcer.names import RESERVED_HINT, hostname_problem, reserved_name_problem
from rexcarcer.pki import PkiError

Address = ipaddress.IPv4Address | ipaddress.IPv6Address

RENEW_FRACTION = 2 / 3  # renew in the last third of the validity


def san_problem(name: str) -> str | None:
    """Why ``name`` cannot be a dNSName SAN (RFC 5280 4.2.1.6: a preferred-syntax
    host name), or None. Wildcards are never issued to a jail."""
    if not name.isascii():
        return "it is not ASCII (write an internationalised name in its xn-- form)"
    return hostname_problem(name)


@dataclass(frozen=True, slots=True)
class Identity:
    """What a jail's certificate says about it."""

    jail: str
    names: tuple[str, ...]  # the first is the jail's own name in the zone
    ips: tuple[Address, ...]

    def as_json(self) -> dict[str, list[str]]:
        return {"names": list(self.names), "ips": [str(ip) for ip in self.ips]}


def identity_for(rec: JailRecord, zone: str) -> Identity:
    """The names and addresses of jail record ``rec``."""
    jail = rec.name
    wanted = [f"{jail}.jail.{zone}"]
    if rec.hostname:
        # a jail's HOSTNAME is its own claim: never a host's, a service's or
        # another jail's name (the jail CA's name constraints exclude host.<zone>
        # too, but a certificate rex would refuse is never issued)
        reserved = reserved_name_problem(rec.hostname, jail, zone)
        if reserved is not None:
            raise PkiError(
                f"jail {jail}: HOSTNAME {rec.hostname!r} {reserved}",
                hint=RESERVED_HINT.format(zone=zone),
            )
        wanted.append(rec.hostname)
    wanted += [f"{svc.name}.svc.{zone}" for svc in rec.services]
    names: list[str] = []
    for raw in wanted:
        name = raw.rstrip(".").lower()
        problem = san_problem(name)
        if problem is not None:
            raise PkiError(
                f"jail {jail}: {raw!r} cannot be a name in its certificate: {problem}",
                hint="jail names, HOSTNAME and SERVICE names must be valid DNS names",
            )
        if name not in names:
            names.append(name)
    ips = (rec.address.ip,) if rec.address is not None else ()
    return Identity(jail, tuple(names), ips)


# -- renewal ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class OnDisk:
    """What the jail holds now: whether its files are the ones rex issued."""

    cert_matches: bool
    key_matches: bool


def renewal_reason(
    stored: Mapping[str, Any] | None,
    ident: Identity,
    ca_fingerprint: str,
    disk: OnDisk,
    now: dt.datetime,
) -> str | None:
    """Why the jail needs a new certificate, or None when the one it has is good."""
    if stored is None:
        return "it has no certificate yet"
    if stored.get("issuer") != ca_fingerprint:
        return "the cluster CA changed"
    if stored.get("identity") != ident.as_json():
        return "its names or addresses changed"
    if not disk.cert_matches:
        return "its certificate in /etc/ssl/rc is missing or was replaced"
    if not disk.key_matches:
        return "its key in /etc/ssl/rc is missing or does not match"
    start, end = int(stored["not_before"]), int(stored["not_after"])
    renew_at = start + (end - start) * RENEW_FRACTION
    if now.timestamp() >= renew_at:
        when = dt.datetime.fromtimestamp(end, dt.UTC)
        return f"its certificate expires on {when:%Y-%m-%d %H:%M} UTC (in its last third)"
    return None
