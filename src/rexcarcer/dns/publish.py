"""The published set: what rex has put into DNS, and keeping unbound equal to it.

State store keys:

    dns/<jail>     {"jail", "host", "records": [{"name", "ttl", "type", "data"}]}
                                                        what that jail publishes now
    names/<fqdn>   {"jail", "host"}                     a HOSTNAME, claimed with
                                                        create-if-absent until destroy

Every change runs under the host lock ``dns``: read the published set, check
the sentinel (re-push everything when unbound lost its run-time data), write
the store, push the difference through the control socket, rewrite the
``include:`` file. ``rex up`` returns only after its records are served.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rexcarcer.dns.plan import Drift, drift, plan_sync
from rexcarcer.dns.records import (
    Record,
    check_hostname,
    in_zone,
    jail_records,
    ordered,
    sentinel,
)
from rexcarcer.dns.unbound import DnsBackend, UnboundUnreachable, apply, write_data_lines
from rexcarcer.errors import Conflict
from rexcarcer.model import keys
from rexcarcer.model.health import in_service
from rexcarcer.model.jail import JailRecord
from rexcarcer.state.base import Compare, Delete, Put, Store, create_json, dumps
from rexcarcer.state.health import get_health

log = logging.getLogger("rexcarcer.dns")

PREFIX = keys.DNS
NAMES = keys.NAMES

Lock = Callable[[], AbstractContextManager[None]]


@dataclass(frozen=True, slots=True)
class CheckReport:
    published: tuple[str, ...]  # running jails that were not published
    withdrawn: tuple[str, ...]  # published jails that are not running
    drift: Drift  # unbound against the published set
    sentinel_missing: bool  # unbound lost its run-time data (reload, restart)
    repaired: bool

    @property
    def clean(self) -> bool:
        return not (self.published or self.withdrawn or self.sentinel_missing) and self.drift.empty

    def as_json(self) -> dict[str, Any]:
        return {
            "clean": self.clean, "repaired": self.repaired,
            "published": list(self.published), "withdrawn": list(self.withdrawn),
            "sentinel_missing": self.sentinel_missing,
            "missing": [r.as_json() for r in self.drift.missing],
            "unexpected": [r.as_json() for r in self.drift.unexpected],
        }  # fmt: skip


@dataclass
class Publisher:
    store: Store
    backend: DnsBackend
    zone: str
    reverse: tuple[str, ...]  # the jail subnet's reverse zones
    data_file: Path | None
    lock: Lock
    host: str = ""

    # -- reading ---------------------------------------------------------------
    # Changes work on the RR lines the store keeps: with 1,000 jails published,
    # building every Record object for every change would cost more than the rest.

    def _lines(self) -> dict[str, list[str]]:
        """jail -> its RR lines, from the store."""
        return {
            e.key[len(PREFIX) :]: [f"{d['name']} {d['ttl']} IN {d['type']} {d['data']}"
                                   for d in e.json()["records"]]
            for e in self.store.list(PREFIX)
        }  # fmt: skip

    def published(self) -> dict[str, list[Record]]:
        """jail -> the records it publishes, from the store."""
        return {j: [Record.from_line(ln) for ln in lines] for j, lines in self._lines().items()}

    @staticmethod
    def union(published: Mapping[str, Sequence[Record]]) -> set[Record]:
        return {r for recs in published.values() for r in recs}

    @staticmethod
    def _at(lines: Mapping[str, Sequence[str]], names: set[str]) -> set[Record]:
        """The published records at ``names``: all that a one-jail change can touch."""
        return {
            Record.from_line(ln)
            for jail_lines in lines.values()
            for ln in jail_lines
            if ln[: ln.index(" ")] in names
        }

    # -- names -------------------------------------------------------------------

    def claim(self, rec: JailRecord) -> None:
        """Claim the jail's HOSTNAME (``names/<fqdn>``); ours already is fine."""
        jail = rec.name
        if not rec.hostname:
            return
        name = check_hostname(rec.hostname, jail, self.zone)
        if name == f"{jail}.jail.{self.zone}":
            return
        mine = {"jail": jail, "host": self.host}
        if create_json(self.store, NAMES + name, mine):
            return
        entry = self.store.get(NAMES + name)
        owner = entry.json() if entry else mine
        if owner.get("jail") != jail:
            raise Conflict(
                f"host name {name} is already published by jail {owner.get('jail')!r}"
                f" on host {owner.get('host') or '?'}",
                hint=f"pick another HOSTNAME, or destroy {owner.get('jail')} first",
            )

    def release(self, jail: str) -> None:
        for entry in self.store.list(NAMES):
            if entry.json().get("jail") == jail:
                self.store.commit([Compare(entry.key, entry.revision)], [Delete(entry.key)])

    # -- changing ------------------------------------------------------------------

    def publish(self, rec: JailRecord) -> list[Record]:
        """Publish jail ``rec``; its records are served when this returns. A jail
        with a HEALTHCHECK is in its ``<svc>.svc`` records only while healthy
        (model/health.py); publishing again after a verdict adds or removes them."""
        jail = rec.name
        services = in_service(rec, get_health(self.store, jail))
        records = jail_records(rec, self.zone, services=services)
        self.claim(rec)
        with self.lock():
            before = self._lines()
            self._ensure_sentinel(before)
            after = {**before, jail: [r.line() for r in records]}
            self.store.commit([], [Put(PREFIX + jail, self._value(jail, after[jail]))])
            names = {r.name for r in records} | {ln.split(" ")[0] for ln in before.get(jail, [])}
            try:
                apply(self.backend, plan_sync(self._at(before, names), self._at(after, names)))
            except BaseException:
                self._restore(jail, before)
                raise
            self._persist(after)
        return records

    def _value(self, jail: str, lines: Sequence[str]) -> str:
        records = [Record.from_line(ln).as_json() for ln in lines]
        return dumps({"jail": jail, "host": self.host, "records": records})

    def _restore(self, jail: str, before: Mapping[str, Sequence[str]]) -> None:
        if jail in before:
            self.store.commit([], [Put(PREFIX + jail, self._value(jail, before[jail]))])
        else:
            self.store.commit([], [Delete(PREFIX + jail)])

    def withdraw(self, jail: str) -> None:
        """Withdraw what ``jail`` published; a no-op when nothing is. When unbound is
        down the store and the file are still updated (it starts from the file)."""
        with self.lock():
            before = self._lines()
            if jail not in before:
                return
            after = {k: v for k, v in before.items() if k != jail}
            self.store.commit([], [Delete(PREFIX + jail)])
            self._persist(after)
            names = {ln.split(" ")[0] for ln in before[jail]}
            try:
                self._ensure_sentinel(after)
                apply(self.backend, plan_sync(self._at(before, names), self._at(after, names)))
            except UnboundUnreachable as exc:
                log.warning("DNS: %s; %s withdrawn from the store and the file only", exc, jail)

    def _ensure_sentinel(self, lines: Mapping[str, Sequence[str]]) -> None:
        """If unbound lost its run-time data, push the whole published set again."""
        mark = sentinel(self.zone)
        if self.backend.has(mark):
            return
        log.info("DNS: unbound lost its run-time data (reload or restart); re-pushing")
        every = {Record.from_line(ln) for jail_lines in lines.values() for ln in jail_lines}
        self.backend.add([*ordered(every), mark])

    def _persist(self, lines: Mapping[str, Sequence[str]]) -> None:
        if self.data_file is not None:
            write_data_lines(self.data_file, (ln for v in lines.values() for ln in v))

    def persist(self, published: Mapping[str, Sequence[Record]]) -> None:
        """Rewrite the include: file from ``published`` (``rex host serve`` at start)."""
        self._persist({j: [r.line() for r in recs] for j, recs in published.items()})

    # -- reconciling --------------------------------------------------------------------

    def managed(self, name: str, desired: set[str]) -> bool:
        """Names rex answers for: below the zone or the jail reverse zones, or published."""
        return name in desired or in_zone(name, (f"{self.zone}.", *self.reverse))

    def check(self, running: Mapping[str, JailRecord], *, repair: bool) -> CheckReport:
        """Compare running jails, the published set and unbound; repair unless told not to."""
        published = self.published()
        to_publish = tuple(sorted(n for n in running if n not in published))
        to_withdraw = tuple(sorted(n for n in published if n not in running))
        if repair:
            for name in to_publish:
                self.publish(running[name])
            for name in to_withdraw:
                self.withdraw(name)
        with self.lock():
            published = self.published()
            mark = sentinel(self.zone)
            sentinel_missing = not self.backend.has(mark)
            desired = self.union(published) | {mark}
            claimed = {e.key[len(NAMES) :] + "." for e in self.store.list(NAMES)}
            names = {r.name for r in desired} | claimed
            served = [r for r in self.backend.list() if self.managed(r.name, names)]
            found = drift(served, desired)
            if repair:
                apply(self.backend, plan_sync(served, desired))
                self.persist(published)
        return CheckReport(to_publish, to_withdraw, found, sentinel_missing, repair)

    def resync(self) -> CheckReport:
        """After unbound (re)started: make it serve exactly the published set."""
        return self.check({name: JailRecord(name) for name in self.published()}, repair=True)
