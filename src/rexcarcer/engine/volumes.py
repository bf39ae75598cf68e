"""Volumes: ``VOLUME <name> <path> [<size>]``, a dataset per (jail, volume).

A volume is ``volumes/<jail>.<volume>`` (jail and volume names have no dots, so
the pair is unambiguous), with ``rexcarcer:jail``, ``volume`` and ``path``
properties and a ZFS ``quota`` when the ``.rex`` file gives a size. It is made
by the first ``rex up`` that names it, mounted at its path inside the jail at
every start (a bind mount in the jail's mount namespace on Linux, a nullfs
``mount`` line in jail.conf on FreeBSD), kept across updates and, unless
``rex destroy --volumes``, across the jail's destruction: a later ``rex up`` of
the same jail attaches it again.

The mount point is made inside the jail root through jailfs, which resolves the
path as the jail sees it, so no symlink in the image can put a volume, or make
rex create a directory, outside the jail.
"""

from __future__ import annotations

import time
from pathlib import Path

from rexcarcer import jailfs
from rexcarcer.errors import Conflict, NotFound, UnsafePath
from rexcarcer.host import Host
from rexcarcer.model.jail import JailRecord, VolumeEntry, VolumeInfo
from rexcarcer.rexfile.ast import Rexfile
from rexcarcer.rexfile.running import format_size

KIND = "volumes"


def dataset(jail: str, volume: str) -> str:
    return f"{KIND}/{jail}.{volume}"


def entries(rexfile: Rexfile) -> tuple[VolumeEntry, ...]:
    return tuple(VolumeEntry(v.name, v.path, v.size) for v in rexfile.volumes)


def check(host: Host, jail: str, wanted: tuple[VolumeEntry, ...]) -> None:
    """Refuse, before anything changes, a volume whose dataset was kept with
    another path, or whose size is below the data it holds."""
    for v in wanted:
        ds = dataset(jail, v.name)
        if not host.storage.exists(ds):
            continue
        kept = host.storage.get_props(ds).get("path")
        if kept and kept != v.path:
            raise Conflict(
                f"volume {v.name} of jail {jail} is mounted at {kept}; the .rex file "
                f"mounts it at {v.path}",
                hint=f"keep the path, or give the volume another name (`rex volume rm "
                f"{jail}.{v.name}` drops the old one and its data)",
            )
        used = host.storage.used(ds)
        if v.size is not None and used > v.size:
            raise Conflict(
                f"volume {v.name} of jail {jail} holds {format_size(used)}, more than "
                f"the size {format_size(v.size)} the .rex file gives",
                hint="give a larger size, or free space in the volume first",
            )


def run_tag(rec: JailRecord) -> str | None:
    """The run that owns ``rec`` while it is being created (PID and start time
    name one process), or None for a settled record."""
    return f"{rec.pid}:{rec.pid_start}" if rec.pid is not None else None


def create_missing(host: Host, rec: JailRecord) -> list[str]:
    """Make the jail's volumes that do not exist yet; the datasets made. Each is
    marked with the run that made it (``run``), so that what a killed run made
    can be told from a volume an earlier life of the jail kept (``made_by``)."""
    made = []
    for v in rec.volumes:
        ds = dataset(rec.name, v.name)
        if host.storage.exists(ds):
            continue
        host.progress.step(f"Creating volume {v.name} for {rec.name} ({v.path})")
        props = {"jail": rec.name, "volume": v.name, "path": v.path,
                 "created": str(int(time.time()))}  # fmt: skip
        tag = run_tag(rec)
        if tag is not None:
            props["run"] = tag
        host.storage.create(ds, props=props)
        made.append(ds)
    return made


def attach(host: Host, rec: JailRecord, root: Path) -> tuple[tuple[Path, str], ...]:
    """The jail's volumes, made if missing, sized, with their mount points made
    inside the root: the (host directory, directory in the jail) pairs to mount."""
    create_missing(host, rec)
    mounts = []
    for v in rec.volumes:
        ds = dataset(rec.name, v.name)
        props = host.storage.get_props(ds)
        size = str(v.size) if v.size is not None else ""
        if props.get("size", "") != size:  # the quota only when it changes
            host.storage.set_quota(ds, v.size)
            host.storage.set_props(ds, {"size": size})
        try:
            jailfs.mkdirs(root, v.path)
            inside = "/" + str(jailfs.resolve_in_root(root, v.path).relative_to(root))
        except OSError as exc:
            raise UnsafePath(f"cannot make the mount point {v.path} of volume {v.name} in "
                             f"jail {rec.name}: {exc}") from exc  # fmt: skip
        mounts.append((host.storage.mountpoint(ds), inside))
    return tuple(mounts)


def list_volumes(host: Host, attached: dict[str, set[str]]) -> list[VolumeInfo]:
    """Every volume on this host; ``attached`` maps a jail to the volumes its
    current definition names."""
    out = []
    for ds in host.storage.datasets(KIND):
        jail, volume = str(ds.props.get("jail", "")), str(ds.props.get("volume", ""))
        if not jail or not volume or ds.props.get("moved"):  # being received, or left by
            continue  # a move away (rex import, rex move: engine/carry.py)
        size = ds.props.get("size")
        out.append(VolumeInfo(
            jail, volume, str(ds.props.get("path", "")), int(size) if size else None,
            host.storage.used(ds.name), volume in attached.get(jail, set()),
            tuple(s.partition("@")[2] for s in host.storage.snapshots(ds.name)),
            host.config.host,
        ))  # fmt: skip
    return sorted(out, key=lambda v: (v.jail, v.name))


def parse_ref(ref: str) -> tuple[str, str]:
    """``JAIL.VOLUME`` as `rex volume` takes it."""
    jail, dot, volume = ref.partition(".")
    if not dot or not jail or not volume or "." in volume:
        raise NotFound(f"no volume {ref!r}", hint="name a volume as JAIL.VOLUME (`rex volume ls`)")
    return jail, volume


def require(host: Host, jail: str, volume: str) -> str:
    ds = dataset(jail, volume)
    if not host.storage.exists(ds):
        raise NotFound(f"jail {jail} has no volume {volume!r}", hint="`rex volume ls` lists them")
    return ds


def snapshot(host: Host, jail: str, volume: str, label: str | None = None) -> str:
    """Snapshot a volume (also while the jail runs); the snapshot's name."""
    ds = require(host, jail, volume)
    label = label or time.strftime("%Y%m%d-%H%M%S")
    if not label.replace("-", "").replace("_", "").replace(".", "").isalnum():
        raise Conflict(f"bad snapshot name {label!r}", hint="use letters, digits, '.', '_', '-'")
    if host.storage.exists(f"{ds}@{label}"):
        raise Conflict(f"volume {jail}.{volume} already has a snapshot {label!r}")
    host.storage.snapshot(f"{ds}@{label}")
    return label


def destroy(host: Host, jail: str, volume: str) -> None:
    host.storage.destroy(require(host, jail, volume), recursive=True)


def made_by(host: Host, rec: JailRecord) -> list[str]:
    """The names of the volumes of ``rec``'s jail that the run owning ``rec``
    made (empty: that run never started the jail)."""
    tag = run_tag(rec)
    if tag is None:
        return []
    return sorted(
        str(ds.props.get("volume"))
        for ds in host.storage.datasets(KIND)
        if ds.props.get("jail") == rec.name and ds.props.get("run") == tag
        and not ds.props.get("moved")
    )  # fmt: skip


def of_jail(host: Host, jail: str) -> list[str]:
    """The names of the volumes jail ``jail`` has on this host."""
    return sorted(
        str(ds.props.get("volume"))
        for ds in host.storage.datasets(KIND)
        if ds.props.get("jail") == jail and not ds.props.get("moved")
    )
