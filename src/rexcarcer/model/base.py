"""A local base as the engine sees it: the versions ``bases/<name>@<version>``,
which one is current, and their ``rexcarcer:*`` properties.

A base gets newer versions (a published base republished, a local one imported
again): each is a snapshot, and the base's *current* version is the newest one,
named by the ``rexcarcer:version`` property of ``bases/<name>``. A base that
received a full stream of a version whose predecessor it did not have keeps that
version in a dataset of its own, ``bases/<name>:<version>`` (':' is never part of
a base name), so the snapshots jails and images were cloned from stay where they
are. docs/bases.md, "Versions", has the layout.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class BaseVersion:
    version: str
    snapshot: str  # relative to the parent dataset: bases/<name>[:<first>]@<version>
    guid: int  # the snapshot's ZFS guid: the same snapshot on every host that has it
    props: dict[str, str]  # this version's: id, digest, signer, osrelease, size, origin

    @property
    def id(self) -> str:
        return self.props.get("id", self.snapshot)


@dataclass(frozen=True, slots=True)
class BaseInfo:
    """One version of a base (the current one unless a pin or a caller asked for
    another), with the list of all its versions.

    ``props`` are the base's properties (``url``, …) overlaid with this version's,
    so ``props["id"]`` keys the build cache of exactly this version."""

    name: str
    version: str
    snapshot: str  # relative to the parent dataset: bases/<name>@<version>
    props: dict[str, str]
    versions: tuple[BaseVersion, ...] = ()  # oldest first; the last is the newest
    current: str = ""  # the base's current version ("" on a record made by hand)

    @property
    def id(self) -> str:
        """What the build cache keys hang off: the version's id, else its snapshot."""
        return self.props.get("id", self.snapshot)

    @property
    def is_current(self) -> bool:
        """Whether this is the base's current version (else an older one, by pin)."""
        return not self.current or self.version == self.current

    def at(self, version: str) -> BaseVersion | None:
        return next((v for v in self.versions if v.version == version), None)
