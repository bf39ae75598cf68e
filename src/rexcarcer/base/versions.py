"""The versions of a base: where they live, what each records, which is current.

Layout under ``REX_DATASET``::

    bases/<name>                 the base: its first versions are its snapshots;
                                 rexcarcer:version names the current version,
                                 rexcarcer:url the URL it is fetched from
    bases/<name>@<version>       a version: rexcarcer:{id,digest,signer,osrelease,
                                 size,origin,complete} on the snapshot itself
    bases/<name>:<version>       a version received as a full stream beside older
                                 ones it does not descend from, and the versions
                                 that later increments add to it (':' is never
                                 part of a base name)

A new version goes into the dataset whose most recent snapshot it descends from
(an increment, or a new local import), so that ZFS shares the blocks that did not
change; a full stream cannot be grafted onto an existing dataset, so it gets a
dataset of its own and the old one stays, with the jails and images cloned from
it, until ``rex base rm NAME@VERSION``.

rex 0.1 wrote a base of one version with its properties on ``bases/<name>``
only. That is still read: the snapshot ``@<version>`` that ``rexcarcer:version``
names takes the dataset's properties when it has none of its own, and they are
copied onto it before a second version arrives.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from rexcarcer.errors import NotFound
from rexcarcer.host import Host
from rexcarcer.model.base import BaseInfo, BaseVersion
from rexcarcer.storage.base import Dataset, Snapshot

# properties of one version, on its snapshot (and mirrored on bases/<name> for
# the current one, which is what rex 0.1 and `zfs get` read there)
VERSION_PROPS = ("id", "digest", "signer", "osrelease", "size", "origin", "complete")
LINEAGE = ":"
# A base being received is bases/_recv-<name>: no base name starts with "_".
TEMP_PREFIX = "_recv-"


def lineage_dataset(name: str, version: str) -> str:
    return f"bases/{name}{LINEAGE}{version}"


def base_of(dataset: str) -> str | None:
    """The base a dataset under bases/ belongs to (None for a receive in progress)."""
    rest = dataset.split("/", 1)[1]
    if rest.startswith(TEMP_PREFIX):
        return None
    return rest.split(LINEAGE, 1)[0]


def own_props(props: Mapping[str, str]) -> dict[str, str]:
    return {k: v for k, v in props.items() if k in VERSION_PROPS and v}


def assemble(name: str, datasets: Sequence[Dataset], snaps: Sequence[Snapshot]) -> BaseInfo | None:
    """The base ``name`` (its current version) from the listings, pure; None when
    ``bases/<name>`` does not exist or has no complete version."""
    primary = next((d for d in datasets if d.name == f"bases/{name}"), None)
    if primary is None:
        return None
    mine = {d.name for d in datasets if base_of(d.name) == name}
    named = primary.props.get("version", "")
    versions: list[BaseVersion] = []
    for snap in snaps:
        ds, _, version = snap.name.partition("@")
        if ds not in mine:
            continue
        if snap.props.get("complete") == "1":
            props = dict(snap.props)
        elif snap.name == f"bases/{name}@{named}":  # rex 0.1: props on the dataset only
            props = own_props(primary.props)
        else:  # received or snapshotted, but not recorded yet (a killed run)
            continue
        versions.append(BaseVersion(version, snap.name, snap.guid, props))
    if not versions:
        return None
    current = named if any(v.version == named for v in versions) else versions[-1].version
    return pick(name, primary.props, tuple(versions), current, current)


def pick(
    name: str, base_props: Mapping[str, str], versions: tuple[BaseVersion, ...],
    current: str, version: str,
) -> BaseInfo:  # fmt: skip
    """The BaseInfo of one version: the base's properties overlaid with the version's."""
    v = next(x for x in versions if x.version == version)
    props = {k: val for k, val in base_props.items() if k not in VERSION_PROPS}
    props.update(v.props)
    props["version"] = v.version
    return BaseInfo(name, v.version, v.snapshot, props, versions, current)


def at_version(info: BaseInfo, version: str) -> BaseInfo:
    if info.at(version) is None:
        have = ", ".join(v.version for v in info.versions)
        raise NotFound(
            f"base {info.name!r} has no version {version!r} (it has: {have})",
            hint="`rex base ls` lists the versions",
        )
    return pick(info.name, info.props, info.versions, info.current, version)


def scan(host: Host) -> tuple[list[Dataset], list[Snapshot]]:
    """Every dataset and snapshot under bases/: one zfs(8) command."""
    return host.storage.tree("bases")


def lookup(host: Host, name: str) -> BaseInfo | None:
    datasets, snaps = scan(host)
    return assemble(name, datasets, snaps)


def all_bases(host: Host) -> list[BaseInfo]:
    datasets, snaps = scan(host)
    rests = (d.name.split("/", 1)[1] for d in datasets)
    names = sorted(r for r in rests if LINEAGE not in r and not r.startswith(TEMP_PREFIX))
    out = [assemble(n, datasets, snaps) for n in names]
    return [b for b in out if b is not None]


def base_datasets(host: Host, name: str) -> list[str]:
    """bases/<name> and the datasets of versions received beside it."""
    return [d.name for d in host.storage.datasets("bases") if base_of(d.name) == name]


def leftovers(host: Host, name: str, version: str) -> list[Snapshot]:
    """Snapshots ``@<version>`` of the base that were never recorded (a run killed
    between ``zfs receive`` or ``zfs snapshot`` and setting the properties)."""
    mine = set(base_datasets(host, name))
    return [
        s for s in host.storage.snapshot_details("bases")
        if s.name.partition("@")[0] in mine and s.name.partition("@")[2] == version
        and s.props.get("complete") != "1"
    ]  # fmt: skip


def tip(host: Host, dataset: str) -> Snapshot | None:
    """The most recent snapshot of ``dataset``: the only one an increment applies to."""
    own = [s for s in host.storage.snapshot_details(dataset) if s.name.partition("@")[0] == dataset]
    return own[-1] if own else None


def keep_own_props(host: Host, info: BaseInfo) -> None:
    """Before a base gets a second version: the current version's properties onto
    its snapshot, where rex 0.1 kept them on the dataset only."""
    for v in info.versions:
        if host.storage.get_props(v.snapshot).get("complete") != "1":
            host.storage.set_props(v.snapshot, {**own_props(v.props), "complete": "1"})


def record(
    host: Host, name: str, snapshot: str, props: Mapping[str, str], base_props: Mapping[str, str]
) -> None:
    """Mark ``snapshot`` a complete version with ``props`` and make it current."""
    mine = {**own_props(props), "complete": "1"}
    host.storage.set_props(snapshot, mine)
    make_current(host, name, snapshot.partition("@")[2], mine, base_props)


def make_current(
    host: Host, name: str, version: str, props: Mapping[str, str],
    base_props: Mapping[str, str] | None = None,
) -> None:  # fmt: skip
    """``rexcarcer:version`` names ``version``; its properties are mirrored on the
    base's dataset (cleared where it has none)."""
    mirror = {k: props.get(k, "") for k in VERSION_PROPS}
    host.storage.set_props(f"bases/{name}", {**(base_props or {}), **mirror, "version": version})
