"""The DNS records of a jail, and the validation in front of unbound. Pure.

For jail ``web1`` at 203.0.113.12 with ``SERVICE renderer PORT 1234`` in zone
``rex.internal`` (DESIGN section 5, notes/dns-and-etcd.md section 6)::

    web1.jail.rex.internal.             30 IN A   203.0.113.12
    12.113.0.203.in-addr.arpa.          30 IN PTR web1.jail.rex.internal.
    renderer.svc.rex.internal.          30 IN A   203.0.113.12
    _renderer._tcp.svc.rex.internal.    30 IN SRV 10 100 1234 web1.jail.rex.internal.

and with ``HOSTNAME docs.example.com``: ``docs.example.com. 300 IN A 203.0.113.12``,
exactly that name (unbound makes a transparent zone of it, so the rest of
example.com still resolves upstream).

Every name and value is checked here, before it can reach unbound's control
socket or the ``include:`` file: labels per RFC 1123, service names per RFC 6335,
no whitespace, quotes, semicolons, backslashes or control characters, nothing
under ``arpa.``, no host name inside another jail's part of the zone. Values that
are not names (addresses, ports) are re-rendered from parsed ``ipaddress`` and
``int`` objects, never copied. ``check_line`` re-checks every rendered line.
"""

from __future__ import annotations

import ipaddress
import operator
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from rexcarcer.dns import DnsError
from rexcarcer.model.jail import JailRecord, ServiceEntry
from rexcarcer.names import RESERVED_HINT, reserved_name_problem

JAIL_TTL = 30
HOSTNAME_TTL = 300
SENTINEL_TTL = 0
SRV_PRIORITY = 10
SRV_WEIGHT = 100
SENTINEL_LABEL = "_rex-sentinel"
SENTINEL_TEXT = '"rexcarcer" "runtime"'

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
# RFC 6335 section 5.1: 1-15 characters, letters digits and hyphens, at least
# one letter, no hyphen at either end, no two hyphens in a row.
_SERVICE = re.compile(r"(?=.*[a-z])[a-z0-9](?:[a-z0-9]|-(?!-)){0,13}[a-z0-9]|[a-z]")
# Quotes, ';', backslash, whitespace, control characters, and anything beyond
# ASCII: str.lower() maps some of those to ASCII letters (KELVIN SIGN -> 'k'),
# which would let a name pass the checks below that it does not match itself.
_FORBIDDEN = re.compile(r"[\s\"';\\\x00-\x1f\x7f-\U0010ffff]")
_NAME = r"(?:[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9])?\.)+"
_TXT = r'"[a-z0-9=._ -]*"(?: "[a-z0-9=._ -]*")*'
_RDATA = rf"[0-9a-f.:]+|\d{{1,5}} \d{{1,5}} \d{{1,5}} {_NAME}|{_NAME}"
_LINE = re.compile(rf"{_NAME} \d{{1,9}} IN (?:(?:A|AAAA|PTR|SRV) (?:{_RDATA})|TXT {_TXT})")


class RType(StrEnum):
    A = "A"
    AAAA = "AAAA"
    PTR = "PTR"
    SRV = "SRV"
    TXT = "TXT"


@dataclass(frozen=True, slots=True, order=True)
class Record:
    """One resource record in presentation form; ``name`` is absolute and lower-case."""

    name: str
    rtype: str
    data: str
    ttl: int

    def line(self) -> str:
        return f"{self.name} {self.ttl} IN {self.rtype} {self.data}"

    def as_json(self) -> dict[str, Any]:
        return {"name": self.name, "ttl": self.ttl, "type": self.rtype, "data": self.data}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Record:
        return cls(str(data["name"]), str(data["type"]), str(data["data"]), int(data["ttl"]))

    @classmethod
    def from_line(cls, line: str) -> Record:
        """The inverse of ``line()`` (the form kept in the store)."""
        name, ttl, _, rtype, data = line.split(" ", 4)
        return cls(name, rtype, data, int(ttl))


# sorting by a C-level key: the dataclass's generated __lt__ is ~10x slower
_ORDER = operator.attrgetter("name", "rtype", "data", "ttl")


def ordered(records: Iterable[Record]) -> list[Record]:
    return sorted(records, key=_ORDER)


# -- validation -----------------------------------------------------------------


def _forbidden(text: str) -> str | None:
    bad = _FORBIDDEN.search(text)
    return f"contains the forbidden character {bad.group()!r}" if bad else None


def label_problem(label: str) -> str | None:
    """Why ``label`` is not an RFC 1123 label (letters, digits, inner hyphens, 1-63)."""
    if not label:
        return "is empty"
    if len(label) > 63:
        return "is longer than 63 characters"
    if not _LABEL.fullmatch(label):
        return "may only hold a-z, 0-9 and inner hyphens"
    return None


def hostname_problem(name: str) -> str | None:
    """Why ``name`` is not a fully qualified RFC 1123 host name, or None."""
    problem = _forbidden(name)
    if problem:
        return problem
    bare = name[:-1] if name.endswith(".") else name
    if len(bare) > 253:
        return "is longer than 253 characters"
    labels = bare.lower().split(".")
    if len(labels) < 2:
        return "is not fully qualified (it needs a dot, e.g. docs.example.com)"
    for label in labels:
        problem = label_problem(label)
        if problem:
            return f"has a label {label!r} that {problem}"
    if labels[-1].isdigit():
        return "ends in an all-numeric label (it looks like an address)"
    return None


def service_problem(name: str) -> str | None:
    """Why ``name`` is not an RFC 6335 service name, or None."""
    problem = _forbidden(name)
    if problem:
        return problem
    if not 1 <= len(name) <= 15:
        return "must be 1 to 15 characters long"
    if not _SERVICE.fullmatch(name.lower()):
        return "may only hold letters, digits and single inner hyphens, with at least one letter"
    return None


def check_zone(zone: str) -> str:
    """The zone, normalised (lower-case, no trailing dot), or ``DnsError``."""
    problem = _forbidden(zone) or (
        hostname_problem(zone) if "." in zone.strip(".") else label_problem(zone.lower())
    )
    if problem is None and _under(zone.lower().strip("."), "arpa"):
        problem = "is a reverse zone"
    if problem:
        raise DnsError(
            f"bad DNS zone {zone!r}: it {problem}", hint="set REX_ZONE, e.g. rex.internal"
        )
    return zone.lower().strip(".")


def _under(name: str, parent: str) -> bool:
    return name == parent or name.endswith("." + parent)


def check_hostname(hostname: str, jail: str, zone: str) -> str:
    """A jail's HOSTNAME, normalised, or ``DnsError`` saying why it cannot be published."""
    problem = hostname_problem(hostname)
    name = hostname.lower().rstrip(".")
    if problem is None:
        if _under(name, "arpa"):
            problem = "lies inside the reverse zones (arpa.)"
        else:  # host.<zone>, svc.<zone>, another jail's name: names.py says why
            problem = reserved_name_problem(name, jail, zone)
    if problem:
        raise DnsError(
            f"jail {jail}: HOSTNAME {hostname!r} {problem}",
            hint=RESERVED_HINT.format(zone=zone),
        )
    return name


def check_line(line: str) -> str:
    """Refuse a rendered RR line that is not exactly one well-formed record."""
    if not _LINE.fullmatch(line):
        raise DnsError(f"refusing to send a malformed record to unbound: {line!r}")
    return line


# -- records ----------------------------------------------------------------------


def _a(name: str, addr: Address, ttl: int) -> Record:
    return Record(name, RType.A if addr.version == 4 else RType.AAAA, addr.compressed, ttl)


def _service_name(svc: ServiceEntry, jail: str) -> str:
    # The port and protocol are typed (model/jail.py checks them when a record is
    # read); the name is text that ends up in unbound, so it is checked here.
    problem = service_problem(svc.name)
    if problem:
        raise DnsError(
            f"jail {jail}: service name {svc.name!r} {problem}",
            hint="service names follow RFC 6335, e.g. web, renderer, http-alt",
        )
    return svc.name.lower()


def jail_records(rec: JailRecord, zone: str) -> list[Record]:
    """Every record jail ``rec`` publishes, sorted."""
    jail = rec.name
    problem = label_problem(jail)
    if problem:
        raise DnsError(f"jail name {jail!r} {problem}", hint="jail names are DNS labels")
    canonical = f"{jail}.jail.{zone}."
    own_name = check_hostname(rec.hostname, jail, zone) if rec.hostname else canonical[:-1]
    services = [(_service_name(s, jail), s.port, s.proto) for s in rec.services]
    out: set[Record] = set()
    for addr in [rec.address.ip] if rec.address is not None else []:
        out.add(_a(canonical, addr, JAIL_TTL))
        out.add(Record(addr.reverse_pointer + ".", RType.PTR, canonical, JAIL_TTL))
        if own_name != canonical[:-1]:
            out.add(_a(own_name + ".", addr, HOSTNAME_TTL))
        for name, port, proto in services:
            out.add(_a(f"{name}.svc.{zone}.", addr, JAIL_TTL))
            srv = f"{SRV_PRIORITY} {SRV_WEIGHT} {port} {canonical}"
            out.add(Record(f"_{name}._{proto}.svc.{zone}.", RType.SRV, srv, JAIL_TTL))
    records = ordered(out)
    for r in records:
        check_line(r.line())
    return records


def sentinel(zone: str) -> Record:
    """A record pushed only at run time, never persisted: when it is gone, unbound
    was reloaded or restarted and lost every run-time change."""
    return Record(f"{SENTINEL_LABEL}.{zone}.", RType.TXT, SENTINEL_TEXT, SENTINEL_TTL)


def names_of(records: Iterable[Record]) -> list[str]:
    return sorted({r.name for r in records})


# -- zones --------------------------------------------------------------------------


def reverse_zones(subnet: Network) -> list[str]:
    """The reverse zones that exactly cover ``subnet``, declared static for unbound.

    Zones sit on octet (IPv4) or nibble (IPv6) boundaries, so a /20 becomes 16
    /24 zones. A subnet smaller than one zone (an IPv4 /25../32) gets none: a
    static zone would black-hole the PTRs of its neighbours, so its PTR records
    stand alone (unbound makes a transparent zone per name)."""
    step = 8 if subnet.version == 4 else 4
    if subnet.version == 4 and subnet.prefixlen > 24:
        return []
    boundary = -(-subnet.prefixlen // step) * step
    if boundary == 0:
        return []
    out = []
    for net in subnet.subnets(new_prefix=boundary):
        labels = net.network_address.reverse_pointer.split(".")
        keep = boundary // step
        out.append(".".join(labels[len(labels) - 2 - keep :]) + ".")
    return out


def in_zone(name: str, zones: Sequence[str]) -> bool:
    """Whether absolute ``name`` lies strictly below one of ``zones``."""
    return any(name != z and name.endswith("." + z) for z in zones)


# -- what unbound reports -------------------------------------------------------------


def parse_list_local_data(text: str) -> list[Record]:
    """Parse ``list_local_data`` output: ``owner<TAB>ttl<TAB>IN<TAB>type<TAB>rdata``
    lines, each followed by an empty line (unbound 1.17.1, saved under tests/data)."""
    out = []
    for raw in text.splitlines():
        parts = raw.split("\t", 4)
        if len(parts) != 5 or parts[2] != "IN" or not parts[1].isdigit():
            continue
        owner, ttl, _, rtype, data = parts
        out.append(Record(owner.lower(), rtype, data.strip(), int(ttl)))
    return out


def render_data_file(records: Iterable[Record], *, header: str) -> str:
    """The persisted ``include:`` file: one ``local-data:`` line per record."""
    return render_data_lines((r.line() for r in records), header=header)


def render_data_lines(rr_lines: Iterable[str], *, header: str) -> str:
    """``render_data_file`` from RR lines (``Record.line()``), as the store keeps them."""
    out = [f"# {line}".rstrip() for line in header.splitlines()]
    out.append("server:")
    # only the sentinel is a TXT record, and it is never persisted
    for line in sorted({ln for ln in rr_lines if " IN TXT " not in ln}):
        out.append(f'    local-data: "{check_line(line)}"')
    return "\n".join(out) + "\n"
