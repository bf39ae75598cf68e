"""``rex import``: a jail from a verified export, made a jail of this host. The
archive and its verification are transfer/; service/jailfile.py joins them.

In order, nothing changing before the checks passed:

1. the name must be free in the store (cluster-wide), a fixed IP free and in
   this host's ranges, the IP and a HOSTNAME admitted by its network policy
   (netpolicy/admit.py), and no dataset of that name (root, kept volume) here;
2. the record is claimed (status ``creating``, this run's PID), then the address
   (the fixed IP, or the next free one of this host's subnet);
3. every stream is received into its temporary dataset, and they are renamed
   into place (carry.py);
4. the jail starts as a ``rex up`` would start it: a new identity for its
   address here, its DNS records; then it is ``ready``.

A failure in 2-4 removes what this run made (as a failed ``rex up``: record,
address, names, certificate, datasets); a killed run leaves a ``creating``
record of a dead PID, which the next ``rex up`` or ``rex destroy`` of that
name cleans, and temporary datasets the next transfer of that name sweeps.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence

from rexcarcer import ipam
from rexcarcer.engine import carry, lifecycle, persist, volumes
from rexcarcer.engine.base import Engine
from rexcarcer.errors import Conflict
from rexcarcer.model.jail import JailInfo, JailRecord, Status
from rexcarcer.names import check_jail_name
from rexcarcer.state import records


def check(eng: Engine, rec: JailRecord, ranges: Sequence[carry.Network]) -> None:
    """Step 1: refuse a taken name or address before anything is received."""
    host, name = eng.host, check_jail_name(rec.name)
    existing = records.get_jail(host.store, name)
    if existing is not None:
        where = f" on host {existing.host}" if existing.host else ""
        raise Conflict(f"a jail named {name!r} exists{where}",
                       hint="import it under another name: rex import FILE --name NEW")  # fmt: skip
    carry.admit(eng, rec, ranges)
    if carry.is_fixed(rec):
        assert rec.address is not None
        holder = ipam.owner(host.store, rec.address.ip)
        if holder is not None and holder != name:
            raise Conflict(f"address {rec.address.ip} is already used by jail {holder!r}",
                           hint="destroy that jail first, or import on another host")  # fmt: skip
    host.storage.ensure_layout()
    carry.check_free(host, rec)


def import_jail(
    eng: Engine, rec: JailRecord, receive: Callable[[carry.Piece], None], *, label: str,
    osrelease: str | None, ranges: Sequence[carry.Network],
) -> JailInfo:  # fmt: skip
    """Make ``rec`` a jail of this host; ``receive(piece)`` fills ``piece.temp``
    with the stream of that piece (its snapshot ``label``)."""
    host, name = eng.host, rec.name
    check(eng, rec, ranges)
    claimed = rec.replace(
        host=host.config.host, status=Status.CREATING, pid=os.getpid(),
        pid_start=host.platform.process_start(os.getpid()), replacing=0,
    )  # fmt: skip
    if not records.create_jail(host.store, claimed.replace(address=None)):
        raise Conflict(f"jail {name!r} is being created by another rex run", hint="try again")
    try:
        with host.lock(lifecycle.lock_name(name)):
            carry.sweep(host, name)
            address, _ = carry.address_for(eng, claimed)
            claimed = claimed.replace(address=address)
            records.put_jail(host.store, claimed)
            for p in carry.pieces(claimed):
                receive(p)
            made = carry.install(host, claimed, label, osrelease)
            carry.drop_snapshots(host, made, [label])
            if claimed.wants_running:
                lifecycle.start_locked(eng, name)
            current = lifecycle.record(eng, name) or claimed
            persist.put(host, current.replace(status=Status.READY, pid=None,
                                              pid_start=None))  # fmt: skip
    except BaseException as exc:
        host.progress.step(f"Rolling back the import of {name}")
        lifecycle._cleanup(eng, name)
        for v in claimed.volumes:  # check() saw none of them here: they are this run's
            host.storage.destroy(volumes.dataset(name, v.name), recursive=True)
        carry.sweep(host, name)
        new = carry.prefixed(exc, f"rex import of {name} failed")
        if new is exc:
            raise
        raise new from exc
    return lifecycle.info(eng, name)
