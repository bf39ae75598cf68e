"""``rex move NAME --to HOST``: a jail and its volumes to another host of the
cluster, driven by the host it runs on (the source); the other host (the
target) answers through its agent (``Target``: service/remote.py over mutual
TLS; tests pass one that calls the target's engine in process).

::

    source                                      target
    lock the jail; read its record (rev R)
                              begin ─────────▶  the record names the caller; a fixed
                                                IP is in its ranges; no dataset of the
                                                name here; sweep a failed transfer's
    snapshot @rex-move-1 (it runs on)
    zfs send (full), each dataset ──────────▶  zfs receive -u into _in-<name>...
    stop it (its DNS records withdrawn)
    snapshot @rex-move-2
    zfs send -i (the last changes) ─────────▶  zfs receive -u (incremental)
                              commit ────────▶  claim its address (the fixed IP, or one of
                                                its subnet), rename into place, start it
                                                (identity reissued, DNS published), then
                                                hand the record over: compare-and-swap on
                                                rev R, host = target   <- the move happens
    release here: datasets, kept generations,
    the old address

The record's compare-and-swap (on the revision the source read when it began,
which the commit carries) is the one point where the jail changes hosts.
Until it, any failure leaves the jail where it was: the source asks the target
to drop what it received and starts the jail again (``MoveFailed``). When the
commit's answer is lost, the source decides from the store: a record that names
the target means the move happened; otherwise the source rewrites its record
(its own compare-and-swap: the target's can no longer succeed, and the target
undoes its start) and the move failed. The source holds the jail's lock all
along, so neither a ``rex`` command nor its agent (jailsync) starts, stops or
updates it meanwhile.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from typing import IO, Protocol

from rexcarcer import ipam
from rexcarcer.engine import carry, lifecycle
from rexcarcer.engine.base import Engine
from rexcarcer.errors import Conflict, MoveFailed, NotFound, RexError
from rexcarcer.model import keys
from rexcarcer.model.jail import JailInfo, JailRecord, Status
from rexcarcer.rexfile.ast import IPInterface
from rexcarcer.state import records
from rexcarcer.state.base import Compare, Entry, Put, Store, dumps
from rexcarcer.storage.pipe import sending

LIVE, FINAL = "rex-move-1", "rex-move-2"
FENCE_TRIES = 20


class Target(Protocol):
    """The host a jail moves to, as the source sees it."""

    host: str

    def begin(self, name: str) -> None: ...

    def send(self, name: str, part: str, stream: IO[bytes], *, since: str | None) -> None:
        """Send one dataset's stream (``since``: incremental from that snapshot)."""
        ...

    def commit(self, name: str, *, label: str, osrelease: str | None, revision: int) -> JailInfo:
        """Take the jail if its record is still at ``revision`` (the source's view)."""
        ...

    def abort(self, name: str) -> None: ...


# -- the source ---------------------------------------------------------------------


def move(eng: Engine, name: str, target: Target) -> JailInfo:
    host = eng.host
    me = host.config.host
    if target.host == me:
        return _here_already(eng, name)
    with host.lock(lifecycle.lock_name(name)):
        found = records.jail_entry(host.store, name)
        if found is None:
            raise NotFound(f"no jail named {name!r}", hint="`rex ls` lists the jails")
        rec, entry = found
        lifecycle.ensure_local(eng, rec)
        if rec.status is not Status.READY:
            raise Conflict(f"jail {name!r} is being {rec.status} by another rex run",
                           hint="wait for it to finish")  # fmt: skip
        running = lifecycle.is_running(eng, name)
        host.progress.step(f"Moving {name} from {me} to {target.host}")
        target.begin(name)  # refused: nothing has changed
        stopped = False
        try:
            stopped = _copy(eng, rec, target, running)
            info = target.commit(name, label=FINAL, osrelease=lifecycle.osrelease_of(eng, rec),
                                 revision=entry.revision)  # fmt: skip
        except BaseException as exc:
            if not _moved(eng, name, target.host):
                raise _undo(eng, rec, target, stopped, exc) from exc
            info = lifecycle.info(eng, name)
        try:
            release(eng, rec, target.host)
        except RexError as exc:  # it runs there now: what stays here is reported, not fatal
            host.progress.step(f"{name} moved, but cleaning up here failed: {exc.message}")
    return info


def _here_already(eng: Engine, name: str) -> JailInfo:
    """`rex move NAME --to HOST` of a jail on HOST: nothing to do, as for a second
    `rex up` of the same file. Run again after a move whose client was killed
    once the jail had changed hosts, it finishes (what the source had still to
    remove, its agent removes: ``finish_release``)."""
    rec = records.get_jail(eng.host.store, name)
    if rec is None:
        raise NotFound(f"no jail named {name!r}", hint="`rex ls` lists the jails")
    lifecycle.ensure_local(eng, rec)
    eng.host.progress.step(f"{name} is on {eng.host.config.host} already: nothing to do")
    return lifecycle.info(eng, name)


def _copy(eng: Engine, rec: JailRecord, target: Target, running: bool) -> bool:
    """Send every dataset while the jail runs, stop it, send the last changes;
    whether this stopped it."""
    host, name = eng.host, rec.name
    parts = carry.pieces(rec)
    carry.drop_snapshots(host, [p.dataset for p in parts], [LIVE, FINAL])  # a failed move's
    carry.snapshot(host, rec, LIVE)
    for p in parts:
        host.progress.step(f"Sending the {p.part} of {name} to {target.host}")
        with sending(host.storage, f"{p.dataset}@{LIVE}") as stream:
            target.send(name, p.part, stream, since=None)
    if running:
        host.progress.step(f"Stopping {name} for its last changes")
        lifecycle.stop_runtime(eng, rec)
    carry.snapshot(host, rec, FINAL)
    for p in parts:
        with sending(host.storage, f"{p.dataset}@{FINAL}", since=f"{p.dataset}@{LIVE}") as stream:
            target.send(name, p.part, stream, since=LIVE)
    return running


def _moved(eng: Engine, name: str, target: str) -> bool:
    """After a failed or unanswered commit: whether the target took the jail. If
    it has not, make sure it never will (rewrite the record: the target's
    compare-and-swap on the old revision then fails)."""
    store = eng.host.store
    for _ in range(FENCE_TRIES):
        found = records.jail_entry(store, name)
        if found is None:
            return False
        rec, entry = found
        if rec.host == target:
            return True
        if store.commit([Compare(entry.key, entry.revision)], [Put(entry.key, entry.value)]):
            return False
    raise MoveFailed(
        f"the record of jail {name} keeps changing: cannot tell whether it moved",
        hint="`rex ls` shows its host; `rex start` it there",
    )


def _undo(
    eng: Engine, rec: JailRecord, target: Target, stopped: bool, exc: BaseException
) -> BaseException:
    """Leave the jail as it was; the error to raise."""
    host, name = eng.host, rec.name
    me = host.config.host
    host.progress.step(f"The move of {name} failed: {name} stays on {me}")
    notes: list[str] = []
    try:
        target.abort(name)
    except RexError as err:
        notes.append(f"{target.host} keeps a partial copy until the next transfer of {name} "
                     f"there ({err.message})")  # fmt: skip
    carry.drop_snapshots(host, [p.dataset for p in carry.pieces(rec)], [LIVE, FINAL])
    if stopped:
        try:
            lifecycle.start_locked(eng, name)
        except RexError as err:
            notes.append(f"it did not start again here: {err.message} (its agent retries)")
    if not isinstance(exc, RexError):
        return exc
    state = "runs" if stopped or lifecycle.is_running(eng, name) else "stays"
    extra = "; ".join(notes)
    return MoveFailed(
        f"moving {name} to {target.host} failed: {exc.message}; it {state} on {me}"
        + (f" ({extra})" if extra else ""),
        hint=exc.hint,
    )


def release(eng: Engine, rec: JailRecord, target: str) -> None:
    """What stays here of a jail that moved away: its datasets, its kept
    generations and their records, its old address (unless it kept it). Its DNS
    records, names and certificate are the new host's now: no hook runs. A
    dataset that cannot be destroyed is marked for the next transfer of the jail
    here to sweep (carry.discard)."""
    host, name, me = eng.host, rec.name, eng.host.config.host
    host.progress.step(f"Removing {name} from {me}")
    host.runtime.remove(name)
    left = [p.dataset for p in carry.pieces(rec)
            if not carry.discard(host, p.dataset, target)]  # fmt: skip
    for ds in host.storage.datasets("generations"):
        if ds.props.get("jail") == name:
            host.storage.destroy(ds.name, recursive=True)
    for old in records.generations(host.store, name):
        if old.host in (me, ""):  # this host's: kept generations stay on their host
            records.delete_generation(host.store, name, old.generation)
    now = records.get_jail(host.store, name)
    new_ip = now.address.ip if now is not None and now.address is not None else None
    # last: while this host still claims the old address, finish_release knows
    # that a killed run left the rest to do
    if rec.address is not None and rec.address.ip != new_ip:
        ipam.release(host.store, rec.address.ip, name)
    if left:
        host.progress.step(f"{', '.join(left)} stay here, marked: the next move or import "
                           f"of {name} to {host.config.host} removes them")  # fmt: skip


def unfinished(store: Store, me: str) -> dict[str, IPInterface]:
    """Jails that moved away from host ``me`` (or never arrived: a commit here
    killed before it took the record) while this host still claims an address
    for them that their record does not name: what ``release`` had left to do
    when its run was killed. Jail -> the address this host claims."""
    jails = {r.name: r for r in records.list_jails(store)}
    out: dict[str, IPInterface] = {}
    for e in store.list(keys.IPAM):
        claim = e.json()
        rec = jails.get(str(claim.get("jail")))
        if claim.get("host") != me or claim.get("build") or rec is None:
            continue
        ip = ipaddress.ip_address(e.key.removeprefix(keys.IPAM))
        if rec.host not in (me, "") and rec.status is Status.READY and (
                rec.address is None or rec.address.ip != ip):  # fmt: skip
            out[rec.name] = ipaddress.ip_interface(ip)
    return out


def finish_release(eng: Engine, name: str) -> bool:
    """Remove what a killed move left here of jail ``name`` (``unfinished``): its
    runtime, datasets, kept generations, the address this host claims. Under the
    jail's lock, taken without waiting (a move in progress holds it); whether it
    ran."""
    host = eng.host
    with host.try_lock(lifecycle.lock_name(name)) as taken:
        address = unfinished(host.store, host.config.host).get(name) if taken else None
        rec = records.get_jail(host.store, name)
        if address is None or rec is None:
            return False
        host.progress.step(f"{name} runs on {rec.host}: removing what a move left here")
        release(eng, rec.replace(address=address), rec.host)
        return True


# -- the target ---------------------------------------------------------------------


def offered(eng: Engine, caller: str, name: str) -> JailRecord:
    """The record of a jail ``caller`` may move here: its own, settled."""
    rec = records.get_jail(eng.host.store, name)
    if rec is None:
        raise NotFound(f"no jail named {name!r} to move here")
    if rec.host != caller:
        raise Conflict(f"jail {name} is on host {rec.host or '?'}, not on {caller}: only its "
                       "host moves it")  # fmt: skip
    if rec.status is not Status.READY:
        raise Conflict(f"jail {name!r} is being {rec.status}", hint="wait for it to finish")
    return rec


def accept_begin(eng: Engine, caller: str, name: str, ranges: Sequence[carry.Network]) -> None:
    host = eng.host
    rec = offered(eng, caller, name)
    carry.admit(eng, rec, ranges)
    with host.lock(lifecycle.lock_name(name)):
        host.storage.ensure_layout()
        carry.sweep(host, name)
        carry.check_free(host, rec)


def accept_part(eng: Engine, caller: str, name: str, part: str, since: str | None) -> str:
    """Where one stream of a moving jail is received: checked before it is read."""
    rec = offered(eng, caller, name)
    p = carry.piece(rec, part)
    storage = eng.host.storage
    if since is None and storage.exists(p.temp):
        raise Conflict(f"the {part} of {name} is being received already",
                       hint="the move starts again from `begin`")  # fmt: skip
    if since is not None and not storage.exists(f"{p.temp}@{since}"):
        raise Conflict(f"the first copy of the {part} of {name} is not here",
                       hint="the move starts again from `begin`")  # fmt: skip
    return p.temp


def accept_commit(
    eng: Engine, caller: str, name: str, *, label: str, osrelease: str | None, revision: int,
    ranges: Sequence[carry.Network],
) -> JailInfo:  # fmt: skip
    """``revision``: the record's revision the source read when it began; a
    record changed since (the source gave up and fenced it) is not taken."""
    host = eng.host
    with host.lock(lifecycle.lock_name(name)):
        rec = offered(eng, caller, name)
        entry = Entry(rec.key, "", revision)
        carry.admit(eng, rec, ranges)
        carry.check_free(host, rec)
        address, claimed = carry.address_for(eng, rec)
        new = rec.replace(host=host.config.host, address=address)
        try:
            made = carry.install(host, new, label, osrelease)
        except BaseException:
            _unclaim(eng, new, claimed)
            raise
        _hand_over(eng, new, entry, caller, claimed)
        carry.drop_snapshots(host, made, [LIVE, FINAL])
        _retag_names(eng, new)
    return lifecycle.info(eng, name)


def _hand_over(eng: Engine, new: JailRecord, entry: Entry, caller: str, claimed: bool) -> None:
    """Start the jail here, then take its record (the move's commit point)."""
    host = eng.host
    started = False
    try:
        if new.wants_running:
            lifecycle.start_record(eng, new)
            started = True
        taken = host.store.commit([Compare(entry.key, entry.revision)],
                                  [Put(new.key, dumps(new.as_json()))])  # fmt: skip
        if not taken:
            raise Conflict(f"jail {new.name} changed on {caller} during the move: it stays there")
    except BaseException:
        if started:
            lifecycle.stop_runtime(eng, new)
        carry.uninstall(host, carry.pieces(new))
        _unclaim(eng, new, claimed)
        raise


def _unclaim(eng: Engine, rec: JailRecord, claimed: bool) -> None:
    if claimed and rec.address is not None:
        ipam.release(eng.host.store, rec.address.ip, rec.name)


def _retag_names(eng: Engine, rec: JailRecord) -> None:
    """The jail's claims (its HOSTNAME, its address) now name this host."""
    store, me = eng.host.store, eng.host.config.host
    entries = [e for e in store.list(keys.NAMES) if e.json().get("jail") == rec.name]
    if rec.address is not None:
        found = store.get(f"{keys.IPAM}{rec.address.ip}")
        entries += [found] if found is not None else []
    for e in entries:
        value = e.json()
        if value.get("host") != me:
            store.commit([Compare(e.key, e.revision)], [Put(e.key, dumps({**value, "host": me}))])


def accept_abort(eng: Engine, caller: str, name: str) -> None:
    """Drop what a failed move left here (only the temporary datasets: a commit
    that failed undid itself)."""
    rec = records.get_jail(eng.host.store, name)
    if rec is not None and rec.host != caller:
        raise Conflict(f"jail {name} is on host {rec.host}, not on {caller}")
    with eng.host.lock(lifecycle.lock_name(name)):
        carry.sweep(eng.host, name)
