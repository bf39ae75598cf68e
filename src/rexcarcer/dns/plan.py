"""What to tell unbound to turn one record set into another. Pure.

unbound has no per-record removal: ``local_data_remove NAME`` drops every record
at NAME (notes/dns-and-etcd.md section 3). So a name that must lose a record,
such as ``web.svc.<zone>`` when one of two instances stops, is removed and its
remaining records are added back in the next command; names that only gain
records are just added (unbound ignores an identical record).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

from rexcarcer.dns.records import Record, ordered


@dataclass(frozen=True, slots=True)
class Change:
    remove: tuple[str, ...] = ()  # names, for local_datas_remove (sent first)
    add: tuple[Record, ...] = ()  # records, for local_datas

    @property
    def empty(self) -> bool:
        return not self.remove and not self.add


def by_name(records: Iterable[Record]) -> dict[str, set[Record]]:
    out: dict[str, set[Record]] = defaultdict(set)
    for r in records:
        out[r.name].add(r)
    return out


def plan_sync(current: Iterable[Record], desired: Iterable[Record]) -> Change:
    """The commands that make ``current`` (what unbound serves) equal ``desired``."""
    cur, want = by_name(current), by_name(desired)
    remove = sorted(name for name, recs in cur.items() if recs - want.get(name, set()))
    dropped = set(remove)
    add: set[Record] = set()
    for name, recs in want.items():
        add |= recs if name in dropped else recs - cur.get(name, set())
    return Change(tuple(remove), tuple(ordered(add)))


@dataclass(frozen=True, slots=True)
class Drift:
    """How unbound differs from what rex publishes, for ``rex dns check``."""

    missing: tuple[Record, ...]  # published by rex, not served
    unexpected: tuple[Record, ...]  # served under rex's names, not published

    @property
    def empty(self) -> bool:
        return not self.missing and not self.unexpected


def drift(served: Iterable[Record], desired: Iterable[Record]) -> Drift:
    have, want = set(served), set(desired)
    return Drift(tuple(ordered(want - have)), tuple(ordered(have - want)))
