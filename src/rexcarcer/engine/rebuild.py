"""``rex state rebuild``: the jail records, kept generations and address claims
from the ``rexcarcer:record`` properties of the jails' datasets (engine/persist.py
writes them), then what the jail hooks keep in the store (DNS records and names,
certificate records, health) from what exists.

All datasets are read with one ``zfs get``; what is on them is input: a record
must pass ``JailRecord.from_json``, name its dataset's jail (and generation),
and claim an address no other rebuilt jail claims. A dataset that fails is
reported with its reason and skipped; the others are rebuilt.

The store must hold no jail records (a lost or moved-aside ``state.db``); with
``force`` the derived keys (jails, history, DNS, names, certificate records,
health, jail address claims) are cleared first and everything else in the store
(revocations, CRLs, secrets, build leases) is kept: ``rex state restore`` of an
old backup, then ``rex state rebuild --force``, brings the records up to date.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rexcarcer import ipam
from rexcarcer.engine.base import Engine
from rexcarcer.errors import Conflict, RebuildRefused, RexError
from rexcarcer.model import keys, recordprop
from rexcarcer.model.jail import JailRecord
from rexcarcer.model.recordprop import RebuiltJail
from rexcarcer.runtime.base import JailState
from rexcarcer.state import records
from rexcarcer.state.base import Delete, Store
from rexcarcer.storage.base import Dataset

KINDS = ("jails", "generations")
PROPS = (*recordprop.NAMES, "moved")
# the keys a rebuild writes; --force clears them first (jail address claims too)
DERIVED = (keys.JAILS, keys.HISTORY, keys.DNS, keys.NAMES, keys.PKI_CERTS, keys.HEALTH)
BATCH = 100


@dataclass(frozen=True, slots=True)
class Skipped:
    dataset: str
    reason: str

    def as_json(self) -> dict[str, str]:
        return {"dataset": self.dataset, "reason": self.reason}


@dataclass(frozen=True, slots=True)
class Found:
    """What the datasets say (pure: ``read``)."""

    current: tuple[JailRecord, ...]
    kept: tuple[JailRecord, ...]
    skipped: tuple[Skipped, ...]
    roots: Mapping[str, Path | None]  # jail -> where jails/<name> is mounted


@dataclass(frozen=True, slots=True)
class RebuildReport:
    jails: tuple[str, ...]
    generations: tuple[tuple[str, int], ...]
    addresses: tuple[tuple[str, str], ...]  # (address, jail)
    running: tuple[str, ...]
    skipped: tuple[Skipped, ...]
    notes: tuple[tuple[str, str], ...]  # (jail, what a hook could not put back)
    cleared: int  # store keys removed first (--force)

    def as_json(self) -> dict[str, Any]:
        """The ``rex state rebuild -o json`` form (docs/schemas/state-rebuild.v1.json)."""
        return {
            "jails": list(self.jails),
            "generations": [{"jail": j, "generation": g} for j, g in self.generations],
            "addresses": [{"address": a, "jail": j} for a, j in self.addresses],
            "running": list(self.running), "skipped": [s.as_json() for s in self.skipped],
            "notes": [{"jail": j, "note": n} for j, n in self.notes], "cleared": self.cleared,
        }  # fmt: skip


def read(datasets: Iterable[Dataset]) -> Found:
    """The records on ``datasets`` (of ``jails/`` and ``generations/``), checked."""
    current: dict[str, JailRecord] = {}
    kept: list[JailRecord] = []
    skipped: list[Skipped] = []
    owners: dict[str, str] = {}
    rows = sorted(datasets, key=lambda d: (not d.name.startswith("jails/"), d.name))
    for ds in rows:
        if ds.props.get("moved"):
            skipped.append(Skipped(ds.name, f"moved to host {ds.props['moved'][:64]}: the jail "
                                   "lives there"))  # fmt: skip
            continue
        try:
            rec = recordprop.for_dataset(ds.name, ds.props)
        except ValueError as exc:
            skipped.append(Skipped(ds.name, str(exc)[:300]))
            continue
        if ds.name.startswith("jails/"):
            addr = str(rec.address.ip) if rec.address is not None else None
            if addr is not None and addr in owners:
                skipped.append(Skipped(ds.name, f"its address {addr} is in the record of jail "
                                       f"{owners[addr]} too"))  # fmt: skip
                continue
            if addr is not None:
                owners[addr] = rec.name
            current[rec.name] = rec
        elif rec.name not in current:
            skipped.append(Skipped(ds.name, f"a kept generation of jail {rec.name}, which has "
                                   f"no dataset jails/{rec.name} with a good record"))  # fmt: skip
        else:
            kept.append(rec)
    kept.sort(key=lambda r: (r.name, r.generation))
    roots = {d.name[len("jails/") :]: d.mountpoint for d in rows if d.name.startswith("jails/")}
    return Found(tuple(current.values()), tuple(kept), tuple(skipped), roots)


def rebuild(eng: Engine, *, force: bool = False) -> RebuildReport:
    host = eng.host
    store = host.store
    held = [e.key[len(keys.JAILS) :] for e in store.list(keys.JAILS)]
    if held and not force:
        shown = ", ".join(held[:5]) + (", ..." if len(held) > 5 else "")
        raise RebuildRefused(
            f"the state store already holds {len(held)} jail record(s) ({shown}): a rebuild "
            "would replace them with what the datasets say",
            hint="`rex ls` shows them; `rex state rebuild --force` replaces the jail records, "
            "kept generations, address claims, DNS records and certificate records with "
            "what the datasets say (docs/faults.md)",
        )
    host.progress.step(f"Reading the records on the datasets below {host.storage.parent}")
    found = read(host.storage.props_below(KINDS, PROPS))
    cleared = clear(store) if force else 0
    addresses, notes = [], []
    for rec in found.current:
        records.put_jail(store, rec)
        if rec.address is None:
            continue
        try:
            ipam.claim(store, rec.address, rec.name, host=rec.host or host.config.host)
            addresses.append((str(rec.address.ip), rec.name))
        except Conflict as exc:  # a build step's lease (kept by --force) holds it
            notes.append((rec.name, f"address not claimed: {exc.message}"))
    for gen in found.kept:
        records.put_generation(store, gen)
    status = host.runtime.status([r.name for r in found.current]) if found.current else {}
    running = {n for n, s in status.items() if s.state is JailState.RUNNING}
    jails = [RebuiltJail(r, found.roots.get(r.name), r.name in running) for r in found.current]
    for hook in eng.hooks:
        host.progress.step(f"Putting back what {hook.name} keeps for {len(jails)} jail(s)")
        try:
            notes += [(j, f"{hook.name}: {n}") for j, n in hook.rebuilt(host, jails)]
        except RexError as exc:  # the records stand; this part waits for the next start
            notes.append(("*", f"{hook.name}: {exc.message}"))
    return RebuildReport(
        tuple(r.name for r in found.current), tuple((g.name, g.generation) for g in found.kept),
        tuple(addresses), tuple(sorted(running)), found.skipped, tuple(notes), cleared,
    )  # fmt: skip


def clear(store: Store) -> int:
    """Remove the keys a rebuild writes (a build step's address lease stays)."""
    doomed = [e.key for prefix in DERIVED for e in store.list(prefix)]
    doomed += [e.key for e in store.list(keys.IPAM) if not e.json().get("build")]
    for i in range(0, len(doomed), BATCH):
        store.commit([], [Delete(k) for k in doomed[i : i + BATCH]])
    return len(doomed)
