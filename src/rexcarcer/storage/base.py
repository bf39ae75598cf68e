"""The storage driver: ZFS datasets and snapshots under one parent dataset.

Names are relative to the parent (``REX_DATASET``): ``bases/<name>``,
``images/<hash>``, ``jails/<name>``; a snapshot is ``<dataset>@<snap>``. Listings
never leave the parent (iocage became slow scanning whole pools).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Protocol

PROP_PREFIX = "rexcarcer:"
LAYOUT = ("bases", "images", "jails", "generations", "volumes")
# The user properties rex sets (as rexcarcer:<key>); listings fetch these.
KNOWN_PROPS = (
    "jail", "version", "id", "origin", "osrelease", "base", "depth", "step", "parent",
    "created", "url", "digest", "signer", "complete", "size", "lineage", "generation", "volume",
    "path", "moved", "run",
)  # fmt: skip


# zfs(8) says "out of space" for ENOSPC and EDQUOT alike; a process in a
# jail or a build step sees strerror(3)'s texts
SPACE_ERRORS = (
    "out of space",
    "quota exceeded",
    "No space left on device",
)  # EDQUOT: "Disk quota exceeded"
# below this much room a failed write is taken to be one that ran out of space
LOW_SPACE = 1 << 20


def is_space_error(text: str) -> bool:
    return any(e.lower() in text.lower() for e in SPACE_ERRORS)


def space_hint(parent: str) -> str:
    """How an administrator frees space under rex's parent dataset (docs/faults.md)."""
    return (
        f"`zfs list -o space -r {parent}` shows what uses it; free space with `rex destroy` "
        "of jails and `rex volume rm` of volumes no longer needed, `zfs destroy` of "
        "kept generations (generations/) and of images no jail uses, or raise the "
        "quota (`zfs set quota=`) or add a disk to the pool"
    )


@dataclass(frozen=True, slots=True)
class Dataset:
    name: str  # relative to the parent dataset
    mountpoint: Path | None
    origin: str | None = None  # relative snapshot name, when a clone of ours
    props: Mapping[str, str] = field(default_factory=dict)  # rexcarcer:* without the prefix


@dataclass(frozen=True, slots=True)
class Snapshot:
    """A snapshot with its identity: ``guid`` is what ``zfs send`` writes into a
    stream (DRR_BEGIN ``drr_toguid``/``drr_fromguid``) and ``zfs receive`` keeps, so
    two pools hold the same snapshot exactly when the guids are equal; ``createtxg``
    orders snapshots by when they came to be on this pool."""

    name: str  # relative to the parent dataset: bases/<name>@<version>
    guid: int
    createtxg: int
    props: Mapping[str, str] = field(default_factory=dict)  # set on the snapshot itself


class Storage(Protocol):
    parent: str

    def ensure_layout(self) -> None:
        """Create the parent dataset and ``bases``/``images``/``jails`` if missing."""
        ...

    def exists(self, name: str) -> bool:
        """Whether a dataset or snapshot (``a/b@s``) exists."""
        ...

    def create(self, name: str, *, props: Mapping[str, str] | None = None) -> Path:
        """Create a mounted filesystem; returns its mountpoint."""
        ...

    def clone(self, snapshot: str, name: str, *, props: Mapping[str, str] | None = None) -> Path:
        """Clone ``snapshot`` to a mounted filesystem ``name``; returns its mountpoint."""
        ...

    def clone_only(
        self, snapshot: str, name: str, *, props: Mapping[str, str] | None = None
    ) -> None:
        """``clone`` for a caller that reads the mountpoint later (a jail's start
        does, with its other properties): one zfs command fewer."""
        ...

    def snapshot(self, snapshot: str) -> None: ...

    # The command lines of the changes above, for `rex plan` (the same builders
    # the driver runs: a plan is never rendered separately).
    def clone_argv(
        self, snapshot: str, name: str, props: Mapping[str, str] | None = None
    ) -> list[str]: ...

    def snapshot_argv(self, snapshot: str) -> list[str]: ...

    def set_props_argvs(self, name: str, props: Mapping[str, str]) -> list[list[str]]: ...

    def mountpoint(self, name: str) -> Path:
        """Where a (mounted) filesystem is mounted."""
        ...

    def mounted(self, name: str) -> bool:
        """Whether a filesystem is mounted (received bases are not)."""
        ...

    def destroy(self, name: str, *, recursive: bool = False, missing_ok: bool = True) -> None:
        """Destroy a dataset or snapshot (recursive: with its snapshots)."""
        ...

    def get_props(self, name: str) -> dict[str, str]:
        """The ``rexcarcer:*`` user properties set on ``name``, a dataset or a
        snapshot (prefix stripped)."""
        ...

    def set_props(self, name: str, props: Mapping[str, str]) -> None: ...

    def set_quota(self, name: str, size: int | None) -> None:
        """Cap a filesystem at ``size`` bytes (zfs ``quota``); None removes the cap."""
        ...

    def used(self, name: str) -> int:
        """Bytes a filesystem and its snapshots use (zfs ``used``)."""
        ...

    def available(self, name: str) -> int:
        """Bytes still free to a filesystem: its quotas and its pool (zfs ``available``)."""
        ...

    def datasets(self, kind: str) -> list[Dataset]:
        """Datasets directly under ``kind`` (one of LAYOUT), with props and origin."""
        ...

    def tree(self, kind: str) -> tuple[list[Dataset], list[Snapshot]]:
        """``datasets(kind)`` and ``snapshot_details(kind)``, read with one zfs
        command (every `rex up` looks up its base)."""
        ...

    def listing(self, kinds: Sequence[str]) -> AbstractContextManager[None]:
        """A scope in which ``tree``, ``datasets`` and ``exists`` of names under
        ``kinds`` (of LAYOUT) answer from one listing of all of them, read at the
        first such call and read again after a command that changes a dataset:
        the reads a `rex up` makes before it clones (its base, its cached steps,
        half-built images) in one zfs command instead of one each. ``exists``
        answers yes from it; a name it lacks is looked up."""
        ...

    def props_of(self, names: Sequence[str], props: Sequence[str]) -> dict[str, Dataset]:
        """Those of ``names`` (datasets or snapshots) that exist, each with its
        mountpoint (None for a snapshot) and those of the ``rexcarcer:*``
        ``props`` set on it (as ``get_props``: not inherited), read with one zfs
        command (a jail's start: its dataset and its image)."""
        ...

    def props_below(self, kinds: Sequence[str], props: Sequence[str]) -> list[Dataset]:
        """The filesystems directly under each of ``kinds`` (of LAYOUT), with their
        mountpoint and those of the ``rexcarcer:*`` ``props`` set on them (not
        inherited), read with one zfs command (``rex state rebuild``)."""
        ...

    def snapshots(self, name: str) -> list[str]:
        """Snapshot names (``name@snap``) of one dataset."""
        ...

    def snapshot_details(self, name: str) -> list[Snapshot]:
        """The snapshots of ``name`` and of the datasets directly under it, oldest
        first, with guid, createtxg and the ``rexcarcer:*`` properties set on each
        snapshot (not those it inherits from its dataset)."""
        ...

    def send(self, snapshot: str, out: IO[bytes], *, since: str | None = None) -> None:
        """Write a ``zfs send`` stream of ``snapshot`` to ``out``; with ``since`` (an
        earlier snapshot of the same dataset), the incremental ``zfs send -i``."""
        ...

    def receive(self, name: str, stream: IO[bytes]) -> None:
        """``zfs receive -u`` a stream into ``name``, left unmounted: a full stream
        makes the new dataset ``name``; an incremental one adds a snapshot to the
        existing ``name``, whose most recent snapshot must be the stream's source."""
        ...

    def mount(self, name: str) -> None:
        """Mount a filesystem a receive left unmounted (at its inherited place)."""
        ...

    def rename(self, name: str, new: str) -> None:
        """Rename a dataset, or a snapshot within its dataset (``a@x`` → ``a@y``)."""
        ...

    def promote(self, name: str) -> None:
        """``zfs promote`` the clone ``name``: it takes over its origin's snapshots
        up to the one it was cloned from (and their other clones), and the origin
        becomes its clone."""
        ...
