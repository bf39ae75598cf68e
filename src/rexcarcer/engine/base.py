"""What the engine is given: a host, the hooks that hang off a jail's life, the
network policy, and where bases come from. The engine declares these Protocols; the features
implement them and ``rexcarcer.wiring`` chooses which (the engine never imports
a feature).

Hooks run in list order for ``prepare``/``started`` and in reverse for
``stopped``/``destroyed``, so what is set up last is taken down first.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from rexcarcer.host import Host
from rexcarcer.model.base import BaseInfo
from rexcarcer.model.jail import JailRecord
from rexcarcer.model.recordprop import RebuiltJail
from rexcarcer.rexfile.ast import Base, IPInterface, Rexfile
from rexcarcer.runtime.base import JailSpec, Secret


class JailHook(Protocol):
    name: str

    def prepare(self, host: Host, rec: JailRecord, spec: JailSpec) -> None:
        """Before the jail starts: write files into ``spec.root``, claim names."""
        ...

    def started(self, host: Host, rec: JailRecord, spec: JailSpec) -> None:
        """The jail runs: publish it (before ``rex up`` returns)."""
        ...

    def stopped(self, host: Host, rec: JailRecord) -> None:
        """The jail stopped: withdraw what ``started`` published. Idempotent."""
        ...

    def destroyed(self, host: Host, rec: JailRecord) -> None:
        """The jail is gone for good (revoke, forget). Idempotent."""
        ...

    def rebuilt(self, host: Host, jails: Sequence[RebuiltJail]) -> list[tuple[str, str]]:
        """``rex state rebuild`` put these jails' records back into an empty store:
        put back what this hook keeps in the store for them, from what exists (the
        jail's files, the running jail), without changing a jail. Returns (jail,
        note) for what could not be put back."""
        ...


class BaseSource(Protocol):
    """Where a ``BASE`` comes from: a local base by name, or a published one by URL
    (fetched, verified and received once; then local)."""

    def ensure(self, host: Host, base: Base) -> BaseInfo:
        """The base, fetched and received if it is a URL not yet on this host."""
        ...

    def local(self, host: Host, base: Base) -> BaseInfo | None:
        """The base if it is on this host; None for a URL that must be fetched
        first. Never touches the network (``rex plan``)."""
        ...


class SecretSource(Protocol):
    """Where ``SECRET`` values come from (secret/): this host's secret directory,
    or in a cluster the copy sealed to this host's key."""

    def open(self, host: Host, names: Sequence[str]) -> tuple[Secret, ...]:
        """The value of every named secret, in order, as this host can open it;
        an error naming the first that is unknown or cannot be opened here.
        Errors name secrets, never show a value."""
        ...


class NetPolicy(Protocol):
    """What a jail (and a build step, which is one) may be and reach on the
    network; the root inside a jail is an adversary (netpolicy/)."""

    def admit(self, host: Host, rexfile: Rexfile, name: str) -> None:
        """Refuse a definition whose ``IP`` or ``HOSTNAME`` jail ``name`` may not
        have on this host. Reads only: ``rex up`` and ``rex plan`` call it
        before anything changes."""
        ...

    def admit_arrival(
        self, host: Host, name: str, ip: IPInterface | None, hostname: str | None
    ) -> None:
        """Refuse jail ``name`` arriving from another host (rex import, rex move)
        with a fixed ``ip`` or a ``hostname`` of its own that a definition could
        not give it here (None: none to check). Reads only."""
        ...

    def guard(self, host: Host) -> None:
        """Make the host's firewall keep jails off its control ports and the
        cluster's addresses (idempotent; before a jail or a build step runs)."""
        ...

    def guard_commands(self, host: Host) -> list[list[str]]:
        """The commands ``guard`` would run now that change the host (``rex plan``)."""
        ...


@dataclass
class Engine:
    host: Host
    bases: BaseSource
    hooks: Sequence[JailHook] = ()
    # keyword and required: an engine never runs jails without a network policy
    policy: NetPolicy = field(kw_only=True)
    secrets: SecretSource | None = None  # None: a SECRET line is refused

    def close(self) -> None:
        self.host.close()
