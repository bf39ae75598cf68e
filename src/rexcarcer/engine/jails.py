"""``rex up`` (a transaction) and ``rex destroy``; the rest of the lifecycle is
lifecycle.py, an update of a changed definition update.py.

The state record ``jails/<name>`` (model/jail.py) is claimed first, with status
``creating`` and the PID of the run. Everything ``rex up`` creates after that is
rolled back if a step fails; if the run is killed, the next ``rex up`` or ``rex
destroy`` finds the record of a dead PID and removes what that run left (or,
for an update, goes back to the previous generation).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from rexcarcer import ipam
from rexcarcer.buildctx import copy_sources
from rexcarcer.engine import build as builder
from rexcarcer.engine import lifecycle, persist, update, volumes
from rexcarcer.engine.base import Engine
from rexcarcer.engine.lifecycle import (
    ENV_FILE as ENV_FILE,
)
from rexcarcer.engine.lifecycle import (
    _cleanup,
    same_definition,
)
from rexcarcer.engine.lifecycle import (
    clone_props as clone_props,
)
from rexcarcer.engine.lifecycle import (
    ensure_local as ensure_local,
)
from rexcarcer.engine.lifecycle import (
    exec_in as exec_in,
)
from rexcarcer.engine.lifecycle import (
    foreign_host as foreign_host,
)
from rexcarcer.engine.lifecycle import (
    hostname_for as hostname_for,
)
from rexcarcer.engine.lifecycle import (
    info as info,
)
from rexcarcer.engine.lifecycle import (
    is_running as is_running,
)
from rexcarcer.engine.lifecycle import (
    jail_files as jail_files,
)
from rexcarcer.engine.lifecycle import (
    list_jails as list_jails,
)
from rexcarcer.engine.lifecycle import (
    lock_name as lock_name,
)
from rexcarcer.engine.lifecycle import (
    new_record as new_record,
)
from rexcarcer.engine.lifecycle import (
    record as record,
)
from rexcarcer.engine.lifecycle import (
    require as require,
)
from rexcarcer.engine.lifecycle import (
    restart as restart,
)
from rexcarcer.engine.lifecycle import (
    spec_for as spec_for,
)
from rexcarcer.engine.lifecycle import (
    start as start,
)
from rexcarcer.engine.lifecycle import (
    start_locked as start_locked,
)
from rexcarcer.engine.lifecycle import (
    stop as stop,
)
from rexcarcer.engine.lifecycle import (
    stop_locked as stop_locked,
)
from rexcarcer.engine.lifecycle import (
    write_jail_files as write_jail_files,
)
from rexcarcer.errors import Busy, Conflict, DependencyError, NotFound, RexError, ZfsUnresponsive
from rexcarcer.model.base import BaseInfo
from rexcarcer.model.depends import dependents, find_cycle
from rexcarcer.model.jail import JailInfo, JailRecord, Status
from rexcarcer.model.keys import jail_key
from rexcarcer.rexfile.ast import Rexfile
from rexcarcer.state import records

# -- rex up ---------------------------------------------------------------------


def operation_lock(name: str) -> str:
    """The lock one ``rex up`` or ``rex destroy`` of jail ``name`` holds from
    start to end (``lock_name`` is the shorter one of a start or stop)."""
    return f"op-{name}"


@contextmanager
def exclusive(eng: Engine, name: str, verb: str) -> Iterator[str | None]:
    """Hold jail ``name`` for one ``rex up`` or ``rex destroy``, waiting for a
    run that holds it. Yields None when this run may go on as if alone (the
    lock was free, or the run it waited for left the record as it was, as an
    unchanged ``rex up`` does); else who changed the jail meanwhile: that run
    won the race, and its result stands."""
    before = _revision(eng, name)
    note = f"`rex {verb} {name}` (pid {os.getpid()})"
    with eng.host.claim(operation_lock(name), note) as holder:
        yield holder if holder is not None and _revision(eng, name) != before else None


def _revision(eng: Engine, name: str) -> int | None:
    entry = eng.host.store.get(jail_key(name))
    return entry.revision if entry is not None else None


def up(eng: Engine, rexfile: Rexfile, name: str) -> JailInfo:
    """Build (cached), create, start; idempotent for an unchanged definition.
    Of two runs for one name, the second waits for the first; if the first
    changed the jail, the second is a no-op when the jail is now what it
    asks for, and fails with ``Busy`` otherwise."""
    copy_sources(rexfile)  # bad COPY sources fail before anything changes
    admit(eng, rexfile, name)
    with exclusive(eng, name, "up") as winner:
        if winner is None:
            return _up(eng, rexfile, name)
        rec = record(eng, name)
        if (rec is not None and rec.status is Status.READY and rec.wants_running
                and same_definition(eng, rexfile, rec) and is_running(eng, name)):  # fmt: skip
            eng.host.progress.step(f"{name} was brought up by {winner}: nothing to do")
            return info(eng, name)
        raise Busy(
            f"jail {name!r} is busy: {winner} changed it while this `rex up` waited",
            hint=f"that run's result stands; run `rex up` again to apply this file to {name}",
        )


def _up(eng: Engine, rexfile: Rexfile, name: str) -> JailInfo:
    host = eng.host
    existing = _reclaim(eng, name)
    if existing is not None:
        if not same_definition(eng, rexfile, existing):
            return update.replace(eng, rexfile, existing)
        if not existing.wants_running or not is_running(eng, name):
            start(eng, name)
        return info(eng, name)
    made: list[str] = []
    # its base, its cached steps and the half-built images: one zfs listing
    with host.storage.listing(("bases", "images")):
        base = eng.bases.ensure(host, rexfile.base)
        host.storage.ensure_layout()
        volumes.check(host, name, volumes.entries(rexfile))
        rec = new_record(eng, rexfile, name)
        if not records.create_jail(host.store, rec):
            other = record(eng, name)
            if other is not None:  # in a cluster: claimed on another host just now
                ensure_local(eng, other)
            raise Conflict(f"jail {name!r} is being created by another rex run", hint="try again")
        try:
            _create(eng, rexfile, base, rec, made)
        except BaseException as exc:
            host.progress.step(f"Rolling back {name}")
            try:
                if isinstance(exc, ZfsUnresponsive):
                    raise exc  # asking zfs to undo would wait as long again
                _cleanup(eng, name)
                for ds in made:  # the volumes this run made are empty: they go too
                    host.storage.destroy(ds, recursive=True)
            except ZfsUnresponsive as stuck:
                _leave_for_repair(eng, name)
                raise ZfsUnresponsive(
                    f"rex up {name} failed: {stuck.message}; {name} was rolled back except in "
                    f"ZFS: its record stays as `creating`, owned by no run, until the agent's next "
                    f"tick (or the next `rex up {name}` or `rex destroy {name}`) removes what is "
                    f"left once ZFS answers",
                    hint=stuck.hint,
                ) from exc
            if isinstance(exc, RexError) and not exc.message.startswith("rex up"):
                raise _prefixed(exc, f"rex up {name} failed: ") from exc
            raise
    return info(eng, name)


def _leave_for_repair(eng: Engine, name: str) -> None:
    """A rollback that ZFS cannot finish now: undo everything outside ZFS (hooks,
    runtime, address) and leave the record, status ``creating`` with no PID, as
    the note of what is left: a zfs command killed on its timeout may still be
    carried out by the daemon when it wakes up (the request was sent), so a
    dataset can appear after this run ended. ``recover`` (the agent's tick),
    the next ``rex up`` or ``rex destroy`` remove it then."""
    host = eng.host
    rec = record(eng, name)
    if rec is None:
        return
    for hook in reversed(eng.hooks):
        hook.stopped(host, rec)
        hook.destroyed(host, rec)
    host.runtime.remove(name)
    ipam.release_all(host.store, name)
    records.put_jail(host.store, rec.replace(pid=None, pid_start=None, pid_ticks=None))


def abandoned(eng: Engine, rec: JailRecord) -> bool:
    """A record no run is working on that is not settled: its run failed to roll
    back (no PID) or was killed (its PID is dead)."""
    if rec.status is Status.READY:
        return False
    return rec.pid is None or not eng.host.platform.process_alive(
        rec.pid, rec.pid_start, ticks=rec.pid_ticks
    )


def recover(eng: Engine, name: str) -> bool:
    """Finish what an abandoned run left (``abandoned``) when no rex run holds the
    jail now, without waiting for one; whether anything was done. The agent calls
    this at every tick, so a failed or killed ``rex up`` is repaired without
    anyone running it again."""
    with eng.host.try_lock(operation_lock(name)) as taken:
        if not taken:
            return False
        rec = record(eng, name)
        if rec is None or foreign_host(eng, rec) is not None or not abandoned(eng, rec):
            return False
        _reclaim(eng, name)
        return True


def _prefixed(exc: RexError, prefix: str) -> RexError:
    """``exc`` with ``prefix`` before its message: same class (exit code), hint
    and fields. Not ``type(exc)(message)``: subclasses such as CommandFailed
    take other constructor arguments."""
    new = type(exc).__new__(type(exc))
    new.__dict__.update(exc.__dict__)
    new.message = prefix + exc.message
    new.args = (new.message,)
    return new


def admit(eng: Engine, rexfile: Rexfile, name: str) -> None:
    """Everything that refuses a definition on this host before anything changes:
    the jail is ours to touch, its IP and HOSTNAME pass the network policy, a
    fixed IP is free, its DEPENDS name other jails and close no cycle, this host
    can open its secrets and enforce its limits."""
    rec = record(eng, name)
    if rec is not None:
        ensure_local(eng, rec)
    eng.policy.admit(eng.host, rexfile, name)
    if rexfile.ip is not None:
        _precheck_fixed_ip(eng, rexfile, name)
    check_depends(eng, rexfile, name)
    lifecycle.open_secrets(eng, rexfile.secrets)  # names only leave this call
    eng.host.platform.check_limits(rexfile.limits)


def check_depends(eng: Engine, rexfile: Rexfile, name: str) -> None:
    """Refuse a DEPENDS on the jail itself, on a jail that does not exist, or one
    that closes a cycle, before anything changes."""
    if not rexfile.depends:
        return
    recs = {r.name: r for r in records.list_jails(eng.host.store)}
    graph: dict[str, tuple[str, ...]] = {n: r.depends for n, r in recs.items()}
    graph[name] = tuple(d.name for d in rexfile.depends)
    hint = "DEPENDS names another jail, one that `rex ls` lists"
    for dep in rexfile.depends:
        where = f"{rexfile.display}:{dep.pos.line}:{dep.pos.col}"
        if dep.name == name:
            raise DependencyError(f"{where}: jail {name} depends on itself", hint=hint)
        if dep.name not in recs:
            raise DependencyError(f"{where}: DEPENDS {dep.name}: no jail named {dep.name!r}",
                                  hint=f"{hint}; `rex up` the jail it needs first")  # fmt: skip
    cycle = find_cycle(graph, name)
    if cycle is not None:
        first = next(d for d in rexfile.depends if d.name == cycle[1])
        raise DependencyError(
            f"{rexfile.display}:{first.pos.line}:{first.pos.col}: DEPENDS {first.name} makes a "
            f"cycle: {' -> '.join(cycle)}",
            hint="jails start after the ones they depend on, so a cycle never starts: "
            "remove one DEPENDS",
        )


def _precheck_fixed_ip(eng: Engine, rexfile: Rexfile, name: str) -> None:
    assert rexfile.ip is not None
    holder = ipam.owner(eng.host.store, rexfile.ip.ip)
    if holder is not None and holder != name:
        raise Conflict(
            f"address {rexfile.ip.ip} is already used by jail {holder!r}",
            hint="pick another IP, or leave IP out so that rex assigns one",
        )


def _create(
    eng: Engine, rexfile: Rexfile, base: BaseInfo, rec: JailRecord, made: list[str]
) -> None:
    host = eng.host
    image = builder.build(eng, rexfile, base)
    host.progress.step(f"Assigning an address to {rec.name}")
    if rexfile.ip is not None:
        ipam.claim(host.store, rexfile.ip, rec.name, host=host.config.host)
        address = rexfile.ip
    else:
        address = ipam.allocate(host.store, host.config.subnet, rec.name, host=host.config.host)
    rec = rec.replace(address=address, image=image)
    records.put_jail(host.store, rec)
    made += volumes.create_missing(host, rec)
    host.progress.step(f"Cloning {image} to jails/{rec.name}")
    ready = _ready(rec)
    props = {**clone_props(rec), **persist.clone_copy(ready)}
    _clone_while_guarding(eng, image, f"jails/{rec.name}", props)
    start(eng, rec.name, guarded=True)
    persist.put_over(host, _ready(record(eng, rec.name) or rec), ready)


def _clone_while_guarding(eng: Engine, image: str, dataset: str, props: dict[str, str]) -> None:
    """The clone and the firewall guard at once. The guard must hold before
    anything of the jail runs, and with the jail's address claimed (it is part
    of the ruleset); the clone is one zfs process this thread would only wait
    for, and touches nothing the guard reads (the store, the firewall). The
    clone's error is raised when the guard's is not."""
    failed: list[BaseException] = []

    def clone() -> None:
        try:
            eng.host.storage.clone_only(image, dataset, props=props)
        except BaseException as exc:  # raised in the caller's thread
            failed.append(exc)

    cloning = threading.Thread(target=clone, name=f"zfs clone {dataset}", daemon=True)
    cloning.start()
    try:
        eng.policy.guard(eng.host)
    finally:
        cloning.join()
    if failed:
        raise failed[0]


def _ready(rec: JailRecord) -> JailRecord:
    """``rec`` as a run that created it leaves it: ready, owned by no run."""
    return rec.replace(status=Status.READY, pid=None, pid_start=None, pid_ticks=None)


def _reclaim(eng: Engine, name: str) -> JailRecord | None:
    """The existing record, after removing the leftovers of a killed run."""
    rec = record(eng, name)
    if rec is not None:
        ensure_local(eng, rec)
    if rec is None or rec.status is Status.READY:
        return rec
    if rec.pid is not None and eng.host.platform.process_alive(
        rec.pid, rec.pid_start, ticks=rec.pid_ticks
    ):
        raise Conflict(
            f"jail {name!r} is being {rec.status} by another rex run (pid {rec.pid})",
            hint="wait for it to finish",
        )
    # a killed run may have left a half-built image and a build address: the
    # next build would sweep them, but a `rex destroy` builds nothing
    builder.sweep_incomplete(eng.host)
    if rec.status is Status.UPDATING:  # killed during an update: back to the old generation
        return update.recover(eng, rec)
    eng.host.progress.step(f"Cleaning up what an interrupted `rex up {name}` left")
    # the volumes that run made go too, as when a `rex up` fails (``up``); a
    # volume an earlier life of the jail kept is not the run's and stays
    made = volumes.made_by(eng.host, rec)
    _cleanup(eng, name)
    for volume in made:
        volumes.destroy(eng.host, name, volume)
    return None


def exists_here(eng: Engine, name: str) -> bool | None:
    """Whether jail ``name`` exists on this host (its dataset, or it runs); None
    when ZFS cannot say (its jails dataset cannot be listed): never a reason to
    drop a record."""
    storage = eng.host.storage
    if is_running(eng, name) or storage.exists(f"jails/{name}"):
        return True
    return False if storage.exists("jails") else None


def prune(eng: Engine, name: str) -> bool:
    """Remove the record of a settled jail of this host that no longer exists
    here (no dataset, not running), with its address, DNS names and kept
    generations: what a store restored from an older snapshot brings back of a
    jail destroyed since. Never waits: a rex run or a move holding the jail
    leaves it for later. Whether it removed anything."""
    with (
        eng.host.try_lock(operation_lock(name)) as op,
        eng.host.try_lock(lock_name(name)) as life,
    ):
        if not (op and life):
            return False
        rec = record(eng, name)
        if rec is None or rec.status is not Status.READY or foreign_host(eng, rec) is not None:
            return False
        if exists_here(eng, name) is not False:
            return False
        eng.host.progress.step(f"Removing the record of {name}: the jail is not on this host")
        _cleanup(eng, name)
        return True


def destroy(eng: Engine, name: str, *, with_volumes: bool = False) -> list[str]:
    """Destroy the jail; the names of its volumes kept (none with ``with_volumes``).
    Waits for a ``rex up`` or ``rex destroy`` that holds the jail: a no-op when
    that one destroyed it, ``Busy`` when it changed it."""
    with exclusive(eng, name, "destroy") as winner:
        if winner is None:
            return _destroy(eng, name, with_volumes=with_volumes)
        if record(eng, name) is None and not eng.host.storage.exists(f"jails/{name}"):
            eng.host.progress.step(f"{name} was destroyed by {winner}: nothing to do")
            return []
        raise Busy(
            f"jail {name!r} is busy: {winner} changed it while this `rex destroy` waited",
            hint=f"that run's result stands; run `rex destroy {name}` again if it should go",
        )


def _destroy(eng: Engine, name: str, *, with_volumes: bool) -> list[str]:
    rec = record(eng, name)
    # asked first, even with a record: ZFS that does not answer fails the destroy
    # here (ZfsUnresponsive), before a hook or the runtime took anything down
    if not eng.host.storage.exists(f"jails/{name}") and rec is None:
        raise NotFound(f"no jail named {name!r}", hint="`rex ls` lists the jails")
    if rec is not None:
        ensure_local(eng, rec)
    graph = {r.name: r.depends for r in records.list_jails(eng.host.store)}
    needed_by = dependents(graph, name)
    if needed_by:
        raise DependencyError(
            f"jail {name} is needed by {', '.join(needed_by)} (DEPENDS {name})",
            hint=f"destroy {', '.join(needed_by)} first, or remove DEPENDS {name} from "
            "their definitions and `rex up` them again",
        )
    if rec is not None and rec.status is not Status.READY:
        _reclaim(eng, name)  # refuses while a live run owns it
    eng.host.progress.step(f"Destroying {name}")
    with eng.host.lock(lock_name(name)):
        _cleanup(eng, name, with_volumes=with_volumes)
    return [] if with_volumes else volumes.of_jail(eng.host, name)
