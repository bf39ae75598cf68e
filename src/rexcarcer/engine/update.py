"""Updating a jail in place: a changed definition becomes the jail's next
generation, with the same name, address, DNS names, identity and volumes.

``jails/<name>`` is always the current generation; an update keeps the one it
replaces as ``generations/<name>.<N>`` (its record as ``history/<name>/<N>``),
up to the configured number (``generations``, default 2). The order, each step
journalled in the jail record (status ``updating``, ``replacing`` = the
generation being replaced, the PID of the run):

1. check what can be checked (a new fixed IP is claimed, volume paths and sizes)
   and build the new image, all while the old generation runs;
2. snapshot the volumes, keep the old record, stop the old generation and rename
   its dataset to ``generations/<name>.<N>``;
3. clone the new image to ``jails/<name>``, carry the jail's identity
   (``/etc/ssl/rc``) over, start it;
4. if it does not start, roll back on its own: the new clone goes, the old one is
   renamed back and started again, and the error says what failed.

A run killed at any step leaves the record ``updating`` with a dead PID; the
next ``rex up`` or ``rex destroy`` goes back to the previous generation
(``recover``). ``rex rollback`` makes a kept generation current again.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from typing import Any

from rexcarcer import ipam, jailfs
from rexcarcer.engine import build as builder
from rexcarcer.engine import lifecycle, persist, volumes
from rexcarcer.engine.base import Engine
from rexcarcer.errors import Conflict, NotFound, RexError, UpdateFailed
from rexcarcer.host import Host
from rexcarcer.model.jail import Desired, GenerationInfo, JailInfo, JailRecord, Status
from rexcarcer.rexfile.ast import IPInterface, Rexfile
from rexcarcer.state import records

IDENTITY_DIR = "/etc/ssl/rc"
IDENTITY_FILES = (("host.key", 0o600), ("host.crt", 0o644), ("cluster.crt", 0o644))


def kept(name: str, generation: int) -> str:
    return f"generations/{name}.{generation}"


# -- what changed ------------------------------------------------------------------------


def changes(old: JailRecord, new: Mapping[str, Any], old_image: str, new_image: str) -> list[str]:
    """Why an update replaces the jail: the instructions that differ."""
    before = old.canonical
    out: list[str] = []
    if before.get("base") != new.get("base"):
        out.append("BASE changed")
    old_steps, new_steps = list(before.get("steps") or []), list(new.get("steps") or [])
    if old_steps != new_steps:
        first = next((i for i, (a, b) in enumerate(zip(old_steps, new_steps, strict=False))
                      if a != b), min(len(old_steps), len(new_steps)))  # fmt: skip
        out.append(f"step {first + 1} changed")
    for key, label in (("env", "ENV"), ("hostname", "HOSTNAME"), ("ip", "IP"),
                       ("services", "SERVICE"), ("volumes", "VOLUME"), ("limits", "LIMIT"),
                       ("secrets", "SECRET"), ("healthcheck", "HEALTHCHECK"),
                       ("restart", "RESTART"), ("depends", "DEPENDS")):  # fmt: skip
        if before.get(key) != new.get(key) and not (not before.get(key) and not new.get(key)):
            out.append(f"{label} changed")
    if not out and old_image != new_image:
        out.append("the content of a COPY source changed")
    return out or ["the definition changed"]


# -- the update --------------------------------------------------------------------------


def replace(eng: Engine, rexfile: Rexfile, existing: JailRecord) -> JailInfo:
    """Make ``rexfile`` the jail's next generation (see the module docstring)."""
    host, name = eng.host, existing.name
    if existing.status is not Status.READY:
        raise Conflict(f"jail {name!r} is being {existing.status} by another rex run",
                       hint="wait for it to finish")  # fmt: skip
    base = eng.bases.ensure(host, rexfile.base)
    new_volumes = volumes.entries(rexfile)
    volumes.check(host, name, new_volumes)
    address, claimed = _address(eng, rexfile, existing)
    marked = existing.replace(status=Status.UPDATING, pid=os.getpid(),
                              pid_start=host.platform.process_start(os.getpid()),
                              replacing=existing.generation)  # fmt: skip
    if not _swap_record(host, existing, marked):
        _release(host, claimed, name)
        raise Conflict(f"jail {name!r} changed under this rex run", hint="try again")
    try:
        image = builder.build(eng, rexfile, base)  # the old generation still runs
    except BaseException:
        _release(host, claimed, name)
        persist.put(host, existing)
        raise
    gen = next_generation(host, existing)
    new = lifecycle.new_record(eng, rexfile, name).replace(
        address=address, image=image, generation=gen, status=Status.UPDATING,
        replacing=existing.generation, desired=Desired.RUNNING,
    )  # fmt: skip
    why = ", ".join(changes(existing, rexfile.canonical(), existing.image, image))
    host.progress.step(f"Updating {name} to generation {gen}: {why}")
    with host.lock(lifecycle.lock_name(name)):
        _switch(eng, existing, new)
        try:
            lifecycle.start_locked(eng, name)
        except BaseException as exc:
            _undo(eng, existing, new, claimed)
            if isinstance(exc, RexError):
                raise UpdateFailed(
                    f"update of {name} to generation {gen} failed: {exc.message}; rolled "
                    f"back to generation {existing.generation}, which runs again",
                    hint=exc.hint,
                ) from exc
            raise
        if existing.address is not None and existing.address != address:
            ipam.release(host.store, existing.address.ip, name)
        persist.put(host, _settled(lifecycle.require(eng, name)))
        prune(eng, name)
    return lifecycle.info(eng, name)


def next_generation(host: Host, current: JailRecord) -> int:
    known = [g.generation for g in records.generations(host.store, current.name)]
    return max([current.generation, *known]) + 1


def _swap_record(host: Host, expected: JailRecord, new: JailRecord) -> bool:
    from rexcarcer.state.base import Compare, Put, dumps

    found = records.jail_entry(host.store, expected.name)
    if found is None or found[0] != expected:
        return False
    return host.store.commit([Compare(found[1].key, found[1].revision)],
                             [Put(new.key, dumps(new.as_json()))])  # fmt: skip


def _address(
    eng: Engine, rexfile: Rexfile, existing: JailRecord
) -> tuple[IPInterface, IPInterface | None]:
    """The new generation's address, and the one this run claimed for it (None:
    the jail keeps its address). The address stays unless the definition's IP
    changed; a new fixed IP is claimed (or refused) before anything else changes."""
    host, name, old = eng.host, existing.name, existing.address
    if rexfile.ip is not None:
        if old is not None and rexfile.ip.ip == old.ip:
            return rexfile.ip, None
        ipam.claim(host.store, rexfile.ip, name, host=host.config.host)
        return rexfile.ip, rexfile.ip
    if old is not None and old.ip in host.config.subnet:
        return old, None
    # the fixed IP goes away: an address from the jail subnet instead
    new = ipam.allocate(host.store, host.config.subnet, name, host=host.config.host)
    return new, new


def _release(host: Host, claimed: IPInterface | None, name: str) -> None:
    if claimed is not None:
        ipam.release(host.store, claimed.ip, name)


def _switch(eng: Engine, old: JailRecord, new: JailRecord) -> None:
    """Stop the old generation and put the new one in its place (not started)."""
    host, name = eng.host, old.name
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for v in old.volumes:  # the data as the old generation left it, for a way back
        ds = volumes.dataset(name, v.name)
        if host.storage.exists(ds):
            # a killed update may have made this one already, in the same second
            label, n = f"gen{old.generation}-{stamp}", 0
            while host.storage.exists(f"{ds}@{label}"):
                n += 1
                label = f"gen{old.generation}-{stamp}-{n}"
            volumes.snapshot(host, name, v.name, label)
    volumes.create_missing(host, new)
    persist.retire(host, _retired(old))
    host.progress.step(f"Stopping generation {old.generation} of {name}")
    lifecycle.stop_runtime(eng, old)
    host.storage.rename(f"jails/{name}", kept(name, old.generation))
    host.progress.step(f"Cloning {new.image} to jails/{name}")
    host.storage.clone_only(new.image, f"jails/{name}", props=lifecycle.clone_props(new))
    carry_identity(
        host.storage.mountpoint(kept(name, old.generation)),
        host.storage.mountpoint(f"jails/{name}"),
    )
    persist.put(host, new)


def carry_identity(old_root: os.PathLike[str], new_root: os.PathLike[str]) -> None:
    """The jail keeps its key and certificate across generations."""
    from pathlib import Path

    entries = []
    for name, mode in IDENTITY_FILES:
        data = jailfs.read_small(Path(old_root), f"{IDENTITY_DIR}/{name}")
        if data is not None:
            entries.append((name, data, mode))
    if entries:
        jailfs.replace_files(Path(new_root), IDENTITY_DIR, entries)


def _undo(eng: Engine, old: JailRecord, new: JailRecord, claimed: IPInterface | None) -> None:
    host, name = eng.host, old.name
    host.progress.step(f"Generation {new.generation} of {name} did not start: rolling back "
                       f"to generation {old.generation}")  # fmt: skip
    back_to(eng, name, old, failed=new)
    _release(host, claimed, name)


def back_to(eng: Engine, name: str, previous: JailRecord, *, failed: JailRecord | None) -> None:
    """Make the kept generation ``previous`` current again, dropping the one in
    ``jails/<name>`` (the failed or interrupted new one); start it if wanted."""
    host = eng.host
    lifecycle.stop_runtime(eng, failed or previous)
    if host.storage.exists(kept(name, previous.generation)):
        host.storage.destroy(f"jails/{name}", recursive=True)
        host.storage.rename(kept(name, previous.generation), f"jails/{name}")
    records.delete_generation(host.store, name, previous.generation)
    restored = _settled(previous)
    persist.put(host, restored)
    if restored.wants_running:
        lifecycle.start_locked(eng, name)


def _settled(rec: JailRecord) -> JailRecord:
    return rec.replace(status=Status.READY, pid=None, pid_start=None, replacing=0)


def _retired(rec: JailRecord) -> JailRecord:
    """The current generation as it is kept when another takes its place."""
    return _settled(rec).replace(retired=time.time_ns())


def by_retirement(gens: list[JailRecord]) -> list[JailRecord]:
    """Kept generations, the one that stopped being current longest ago first
    (by number among those kept before rex recorded when)."""
    return sorted(gens, key=lambda g: (g.retired, g.generation))


def recover(eng: Engine, rec: JailRecord) -> JailRecord:
    """An update whose run was killed: back to the generation it replaced."""
    host, name = eng.host, rec.name
    host.progress.step(f"Going back to generation {rec.replacing} of {name}: an update "
                       "was interrupted")  # fmt: skip
    previous = next((g for g in records.generations(host.store, name)
                     if g.generation == rec.replacing), None)  # fmt: skip
    with host.lock(lifecycle.lock_name(name)):
        if host.storage.exists(kept(name, rec.replacing)) and previous is not None:
            back_to(eng, name, previous, failed=rec)
        else:  # killed before the old generation was put aside: it is still current
            old = previous if previous is not None else rec
            records.delete_generation(host.store, name, rec.replacing)
            persist.put(host, _settled(old))
            if old.wants_running and not lifecycle.is_running(eng, name):
                lifecycle.start_locked(eng, name)
    found = lifecycle.record(eng, name)
    assert found is not None
    return found


def prune(eng: Engine, name: str) -> None:
    """Keep the configured number of earlier generations; drop older ones."""
    host = eng.host
    # by when each stopped being current, not by number: after a rollback the
    # generation made current again is older by number than the ones it replaced,
    # and it is the one an update of it must keep
    old = by_retirement(records.generations(host.store, name))
    for gen in old[: max(0, len(old) - host.config.generations)]:
        host.storage.destroy(kept(name, gen.generation), recursive=True)
        records.delete_generation(host.store, name, gen.generation)


# -- rex rollback / rex history --------------------------------------------------------


def rollback(eng: Engine, name: str, to: int | None = None) -> JailInfo:
    """Make an earlier generation current again (by default the one that was
    current last before this one);
    the current one is kept in its place."""
    host = eng.host
    current = lifecycle.require(eng, name)
    if current.status is not Status.READY:
        raise Conflict(f"jail {name!r} is being {current.status} by another rex run",
                       hint="wait for it to finish")  # fmt: skip
    gens = records.generations(host.store, name)
    if not gens:
        raise NotFound(f"jail {name} has no earlier generation to roll back to",
                       hint="an update in place (rex up of a changed file) keeps one")  # fmt: skip
    # by default the generation that was current last before this one
    target = by_retirement(gens)[-1] if to is None else \
        next((g for g in gens if g.generation == to), None)  # fmt: skip
    if target is None:
        kept_list = ", ".join(str(g.generation) for g in gens)
        raise NotFound(f"jail {name} has no generation {to}", hint=f"kept: {kept_list}")
    claimed = None
    if target.address is not None and (current.address is None
                                       or target.address.ip != current.address.ip):  # fmt: skip
        ipam.claim(host.store, target.address, name, host=host.config.host)
        claimed = target.address
    host.progress.step(f"Rolling {name} back from generation {current.generation} to "
                       f"{target.generation}")  # fmt: skip
    with host.lock(lifecycle.lock_name(name)):
        persist.retire(host, _retired(current))
        lifecycle.stop_runtime(eng, current)
        host.storage.rename(f"jails/{name}", kept(name, current.generation))
        host.storage.rename(kept(name, target.generation), f"jails/{name}")
        records.delete_generation(host.store, name, target.generation)
        restored = _settled(target).replace(desired=Desired.RUNNING)
        persist.put(host, restored)
        try:
            lifecycle.start_locked(eng, name)
        except BaseException:
            back_to(eng, name, _settled(current), failed=restored)
            _release(host, claimed, name)
            raise
        old = current.address
        if old is not None and (target.address is None or old.ip != target.address.ip):
            ipam.release(host.store, old.ip, name)
        prune(eng, name)
    return lifecycle.info(eng, name)


def history(eng: Engine, name: str) -> list[GenerationInfo]:
    current = lifecycle.require(eng, name)
    out = [GenerationInfo(g.generation, False, g.created, g.image, g.base, g.definition)
           for g in records.generations(eng.host.store, name)]  # fmt: skip
    out.append(GenerationInfo(current.generation, True, current.created, current.image,
                          current.base, current.definition))  # fmt: skip
    return sorted(out, key=lambda g: g.generation)
