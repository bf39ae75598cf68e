"""A jail's datasets on their way between hosts: ``rex export``, ``rex import``,
``rex move`` (moving.py).

A jail travels as the root of its current generation (``jails/<name>``) and its
volumes (``volumes/<name>.<volume>``), each as one ``zfs send`` stream of a
snapshot taken for the trip. Kept generations and the volumes' own snapshots
stay behind: a received jail starts with one generation.

On the receiving host each stream goes into a temporary dataset
(``jails/_in-<name>``, ``volumes/_in-<name>.<volume>``; ``_`` starts no jail
name, so they cannot collide with a jail's) that is renamed into place only
when every stream has arrived. A failure destroys the temporary datasets; a
run killed half-way leaves them for the next transfer of that name to sweep.
A received root is a filesystem of its own (not a clone of an image this host
has), so it carries the jail's ``osrelease`` as a property
(lifecycle.spec_for reads it there).
"""

from __future__ import annotations

import contextlib
import ipaddress
import time
from collections.abc import Sequence
from dataclasses import dataclass

from rexcarcer import ipam
from rexcarcer.engine import lifecycle, volumes
from rexcarcer.engine.base import Engine
from rexcarcer.errors import AddressError, Conflict, RexError
from rexcarcer.host import Host
from rexcarcer.model import recordprop
from rexcarcer.model.jail import JailRecord
from rexcarcer.rexfile.ast import IPInterface
from rexcarcer.storage.base import Dataset

TEMP = "_in-"
ROOT = "root"
MOVED = "moved"  # the property discard() leaves on what a move away could not destroy
DISCARD_SECONDS = 30.0

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True, slots=True)
class Piece:
    """One dataset of a jail: ``part`` is ``root`` or the volume's name."""

    part: str
    dataset: str  # where it lives
    temp: str  # where a transfer receives it


def pieces(rec: JailRecord) -> list[Piece]:
    name = rec.name
    out = [Piece(ROOT, f"jails/{name}", f"jails/{TEMP}{name}")]
    out += [Piece(v.name, volumes.dataset(name, v.name), f"volumes/{TEMP}{name}.{v.name}")
            for v in rec.volumes]  # fmt: skip
    return out


def piece(rec: JailRecord, part: str) -> Piece:
    found = next((p for p in pieces(rec) if p.part == part), None)
    if found is None:
        raise Conflict(f"jail {rec.name} has no part {part!r}",
                       hint=f"its parts: {', '.join(p.part for p in pieces(rec))}")  # fmt: skip
    return found


def is_fixed(rec: JailRecord) -> bool:
    """Whether the jail's address is its .rex file's IP (it keeps it wherever it
    goes) rather than one its host assigned (it gets one from the next host)."""
    return bool(rec.canonical.get("ip")) and rec.address is not None


def check_address(rec: JailRecord, ranges: Sequence[Network], host: str) -> None:
    """A fixed IP only lands on a host whose jail subnet or declared public ranges
    hold it (the host's jail CA certifies nothing else)."""
    if not is_fixed(rec):
        return
    assert rec.address is not None
    ip = rec.address.ip
    if not any(ip.version == n.version and ip in n for n in ranges):
        raise AddressError(
            f"jail {rec.name} has the fixed IP {ip}, and host {host} declares no range "
            f"holding it (its ranges: {', '.join(str(n) for n in ranges) or 'none'})",
            hint="move it to the host whose subnet holds the address, or declare the range "
            "there (`rex cluster join --public-range` / `rex cluster renew --public-range`)",
        )


def admit(eng: Engine, rec: JailRecord, ranges: Sequence[Network]) -> None:
    """Refuse a jail arriving here that a definition could not make here: a fixed
    IP outside this host's ranges or that the network policy refuses (another
    host's address, an etcd endpoint's...), a HOSTNAME of its own that claims a
    host's, a service's or another jail's name. Reads only."""
    host = eng.host
    check_address(rec, ranges, host.config.host)
    own_name = None if default_hostname(rec, host.config.zone) else rec.hostname
    fixed = rec.address if is_fixed(rec) else None
    eng.policy.admit_arrival(host, rec.name, fixed, own_name)


def snapshot(host: Host, rec: JailRecord, label: str) -> None:
    for p in pieces(rec):
        if not host.storage.exists(f"{p.dataset}@{label}"):
            host.storage.snapshot(f"{p.dataset}@{label}")


def drop_snapshots(host: Host, datasets: Sequence[str], labels: Sequence[str]) -> None:
    for ds in datasets:
        for label in labels:
            host.storage.destroy(f"{ds}@{label}")


def sweep(host: Host, name: str) -> None:
    """Destroy what an earlier transfer of jail ``name`` left here: unfinished
    temporary datasets, and the datasets a move away could not destroy (marked)."""
    prefix = f"{TEMP}{name}"
    for kind in ("jails", "volumes"):
        for ds in host.storage.datasets(kind):
            rest = ds.name.split("/", 1)[1]
            if rest == prefix or rest.startswith(prefix + "."):
                host.progress.step(f"Removing {ds.name}, left by an unfinished transfer")
                host.storage.destroy(ds.name, recursive=True)
            elif _left_behind(ds, name):
                host.progress.step(f"Removing {ds.name}, left by a move to {ds.props[MOVED]}")
                host.storage.destroy(ds.name, recursive=True)


def _left_behind(ds: Dataset, name: str) -> bool:
    """A dataset of jail ``name`` that ``discard`` marked (its jail lives elsewhere)."""
    rest = ds.name.split("/", 1)[1]
    return bool(ds.props.get(MOVED)) and (rest == name or rest.startswith(name + "."))


def discard(host: Host, dataset: str, moved_to: str) -> bool:
    """Destroy ``dataset`` of a jail that moved to ``moved_to``; whether it is gone.
    The move has happened: a failure here only leaves the dataset, marked, for the
    next transfer of the jail to this host to sweep (``sweep``; ``check_free`` and
    ``rex volume ls`` pass over it). zfs-fuse may answer "dataset is busy" for a
    while after the jail's processes ended (the driver retries a few seconds):
    this waits up to ``DISCARD_SECONDS`` more."""
    deadline = time.monotonic() + DISCARD_SECONDS
    while True:
        try:
            host.storage.destroy(dataset, recursive=True)
            return True
        except RexError as exc:
            if "busy" not in exc.message or time.monotonic() > deadline:
                host.progress.step(f"cannot remove {dataset} yet: {exc.message}")
                break
        time.sleep(1.0)
    with contextlib.suppress(RexError):
        host.storage.set_props(dataset, {MOVED: moved_to})
    return False


def check_free(host: Host, rec: JailRecord) -> None:
    """Nothing of this name may be overwritten: a jail root or a kept volume."""
    name = rec.name
    left = {ds.name for kind in ("jails", "volumes") for ds in host.storage.datasets(kind)
            if _left_behind(ds, name)}  # fmt: skip
    if host.storage.exists(f"jails/{name}") and f"jails/{name}" not in left:
        raise Conflict(f"this host already has a dataset jails/{name}",
                       hint="a jail of that name lives here: destroy it first, or choose "
                       "another name (rex import --name)")  # fmt: skip
    for v in rec.volumes:
        ds = volumes.dataset(name, v.name)
        if host.storage.exists(ds) and ds not in left:
            raise Conflict(
                f"this host keeps a volume {name}.{v.name} of an earlier jail {name}",
                hint=f"`rex volume rm {name}.{v.name}` drops it and its data; or choose "
                "another name (rex import --name)",
            )


def install(host: Host, rec: JailRecord, label: str, osrelease: str | None) -> list[str]:
    """Rename every received dataset into place, with rex's properties, mounted;
    the datasets made. On a failure, what was renamed goes back to its
    temporary name (the caller sweeps those)."""
    done: list[Piece] = []
    try:
        for p in pieces(rec):
            if not host.storage.exists(f"{p.temp}@{label}"):
                raise Conflict(f"the {p.part} of jail {rec.name} did not arrive complete "
                               f"(no snapshot {label})", hint="run the transfer again")  # fmt: skip
            host.storage.rename(p.temp, p.dataset)
            done.append(p)
            host.storage.set_props(p.dataset, _props(rec, p, osrelease))
            host.storage.mount(p.dataset)
    except BaseException:
        uninstall(host, done)
        raise
    return [p.dataset for p in done]


def _props(rec: JailRecord, p: Piece, osrelease: str | None) -> dict[str, str]:
    if p.part == ROOT:
        # the record as `rex move` commits it here (an import writes it again when ready)
        return {**lifecycle.clone_props(rec), **recordprop.encode(rec),
                "osrelease": osrelease or ""}  # fmt: skip
    v = next(v for v in rec.volumes if v.name == p.part)
    return {"jail": rec.name, "volume": v.name, "path": v.path, "created": str(int(time.time()))}


def uninstall(host: Host, done: Sequence[Piece]) -> None:
    """Put installed datasets back under their temporary names (a commit undone)."""
    for p in reversed(done):
        try:
            host.storage.rename(p.dataset, p.temp)
        except RexError as exc:
            host.progress.step(f"cannot rename {p.dataset} back to {p.temp}: {exc}")


def address_for(eng: Engine, rec: JailRecord) -> tuple[IPInterface, bool]:
    """The address jail ``rec`` gets on this host, claimed: its fixed IP, or the
    next free one of this host's subnet; and whether this call claimed it anew."""
    host = eng.host
    if is_fixed(rec):
        assert rec.address is not None
        holder = ipam.owner(host.store, rec.address.ip)
        ipam.claim(host.store, rec.address, rec.name, host=host.config.host)
        return rec.address, holder is None
    return ipam.allocate(host.store, host.config.subnet, rec.name, host=host.config.host), True


def default_hostname(rec: JailRecord, zone: str) -> bool:
    """Whether the jail's host name is the one rex gives it (``<jail>.jail.<zone>``),
    which follows the jail's name and zone, not a HOSTNAME it asked for."""
    return rec.hostname in ("", f"{rec.name}.jail.{zone}")


def prefixed(exc: BaseException, what: str) -> BaseException:
    """``exc`` with ``what: `` before its message when it is a plain RexError
    (one whose class takes a message and a hint), else ``exc`` itself."""
    if isinstance(exc, RexError) and type(exc).__init__ is RexError.__init__:
        return type(exc)(f"{what}: {exc.message}", hint=exc.hint)
    return exc
