"""Writing a jail record: to the store, and a copy onto the jail's dataset.

The copy (``rexcarcer:record``, model/recordprop.py) is what ``rex state
rebuild`` reads when the store is lost. Every engine write of a settled
record goes through ``put`` once the jail's dataset exists, so the copy is the
record as the store last had it; a kept generation keeps the copy its dataset
had when it was renamed to ``generations/<name>.<N>``, which is the record
``history/<name>/<N>`` keeps. Records written before the clone (the claim of
a new jail, the address it got, an import's claim) and the mark an update sets
on the old record before it builds (update.py ``_swap_record``) stay in the
store only: a run killed there leaves the previous copy, or none (the rebuild
reports that dataset, and ``rex destroy NAME`` removes it). A new jail's
clone carries the record it will have once started (``ready``, desired
running) from its ``zfs clone -o`` (zfs-clone(8): "-o property=value Sets the
specified property"), so its ``rex up`` sets nothing after the
start unless the start changed the record (``put_over``): a run killed
between the clone and the end of the start leaves a dataset whose copy says
ready, which a rebuild restores as a jail that wants to run (the agent starts
it; ``rex destroy NAME`` removes it). An update's new
record (``updating``, with the generation it replaces) is copied at the
switch, so a rebuild after a run killed mid-update gives ``rex up`` what it
needs to go back (update.py ``recover``).
"""

from __future__ import annotations

from rexcarcer.host import Host
from rexcarcer.model import recordprop
from rexcarcer.model.jail import JailRecord
from rexcarcer.state import records


def put(host: Host, rec: JailRecord) -> None:
    """Write ``rec`` to the store, then onto ``jails/<name>``."""
    records.put_jail(host.store, rec)
    mirror(host, rec)


def put_over(host: Host, rec: JailRecord, copied: JailRecord) -> None:
    """Write ``rec`` to the store, and onto its dataset unless that already holds
    ``copied`` and ``copied`` is ``rec`` (the copy its clone was given)."""
    records.put_jail(host.store, rec)
    if rec != copied:
        mirror(host, rec)


def clone_copy(rec: JailRecord) -> dict[str, str]:
    """The properties that put ``rec``'s copy on a dataset as it is cloned."""
    return recordprop.encode(rec)


def mirror(host: Host, rec: JailRecord) -> None:
    """Copy ``rec`` onto its dataset (one ``zfs set`` per property: one, unless
    the record needs more than 8000 bytes)."""
    host.storage.set_props(f"jails/{rec.name}", recordprop.encode(rec))


def retire(host: Host, rec: JailRecord) -> None:
    """Keep ``rec`` (with when it stopped being current) as a generation: in the
    store, and onto ``jails/<name>`` just before that dataset is renamed to
    ``generations/<name>.<N>``, so a rebuild orders kept generations as the
    store did (update.py ``by_retirement``)."""
    records.put_generation(host.store, rec)
    mirror(host, rec)
