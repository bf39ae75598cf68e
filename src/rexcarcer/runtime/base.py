"""The runtime driver: what starts, stops and enters a jail.

``freebsd`` drives jail(8); ``linux`` stands a jail up from namespaces; ``fake``
keeps jails in memory for unit tests. The engine only sees this Protocol.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Protocol

from rexcarcer.rexfile.ast import IPInterface
from rexcarcer.run import Completed, OutputSink


class JailState(StrEnum):
    RUNNING = "running"
    STOPPED = "stopped"


@dataclass(frozen=True, slots=True)
class JailSpec:
    """Everything a runtime needs to start one jail."""

    name: str  # a DNS label: [a-z0-9-], no dots (jail(8) reads dots as hierarchy)
    root: Path  # the jail's root directory on the host (the mounted clone)
    hostname: str
    address: IPInterface | None
    interface: str  # host interface the address lives on (FreeBSD ip4.addr, Linux bridge)
    gateway: ipaddress.IPv4Address | ipaddress.IPv6Address | None = None  # host side address
    env: tuple[tuple[str, str], ...] = ()
    osrelease: str | None = None  # FreeBSD: the base's freebsd-version
    # (host directory, directory inside the jail) bind/nullfs-mounted before the
    # jail starts: its volumes. The inside path is already resolved within the
    # root (jailfs) and exists as a plain directory.
    mounts: tuple[tuple[Path, str], ...] = ()
    # Networks this jail reaches through its host beyond the platform's own
    # (a jail that publishes a port answers clients anywhere: a default route)
    routes: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()


Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True, slots=True)
class BuildNet:
    """The network of one PROVISION RUN step: the same as a jail's. ``name`` is
    the owner of ``address`` in IPAM (``build-<first 8 of the step key>``);
    ``gateway`` the host's address in the jail subnet (the step's resolver and
    log collector); ``interface`` the host interface (Linux: the bridge);
    ``routes`` what the step reaches through ``gateway`` (never a default)."""

    name: str
    address: IPInterface
    gateway: Address
    interface: str
    routes: tuple[Network, ...] = ()


@dataclass(frozen=True, slots=True)
class JailStatus:
    name: str
    state: JailState
    pid: int | None = None  # FreeBSD: jid; Linux: the jail's init PID on the host


class Runtime(Protocol):
    def start(self, spec: JailSpec) -> None:
        """Create and start the jail; runs ``/bin/sh /etc/rc`` when the root has one.
        Raises ``RuntimeBackendError`` and leaves nothing running on failure."""
        ...

    def start_commands(self, spec: JailSpec) -> list[list[str]]:
        """The commands ``start`` would run now, in order: every one that changes
        the host (queries left out). ``rex plan`` shows them; ``start`` runs them."""
        ...

    def build_commands(
        self, root: Path, command: str, env: Mapping[str, str], network: BuildNet | None = None
    ) -> list[list[str]]:
        """The commands ``build_run`` runs for a PROVISION step."""
        ...

    def stop(self, name: str) -> None:
        """Stop the jail and every process in it; a no-op when it is not running.
        Also removes what start created on the host (alias, netns, veth)."""
        ...

    def status(self, names: Sequence[str]) -> dict[str, JailStatus]:
        """The state of each named jail (every name gets an entry)."""
        ...

    def exec(
        self,
        name: str,
        argv: Sequence[str],
        *,
        env: Mapping[str, str],
        interactive: bool = False,
        on_output: OutputSink | None = None,
    ) -> Completed:
        """Run argv in the running jail, as root, with exactly ``env``.
        The exit status is returned, not raised."""
        ...

    def build_run(
        self,
        root: Path,
        command: str,
        *,
        env: Mapping[str, str],
        on_output: OutputSink | None = None,
        network: BuildNet | None = None,
    ) -> Completed:
        """Run ``/bin/sh -c command`` in a throw-away jail on ``root`` (a PROVISION
        step). Every process it started is gone when this returns. With
        ``network`` the step has a jail's network (its address on the host's
        jail network, removed again when the step ends); without, none."""
        ...

    def build_cleanup(self, network: BuildNet) -> None:
        """Remove what ``build_run`` set up for ``network`` on the host, if a run
        killed mid-step left it. Idempotent; nothing when there is nothing."""
        ...

    def remove(self, name: str) -> None:
        """Forget the jail: stop it if needed and remove any configuration the
        runtime keeps for it (jail.conf.d file, run files). Idempotent."""
        ...


JAIL_PATH = "/sbin:/bin:/usr/sbin:/usr/bin:/usr/local/sbin:/usr/local/bin"


def jail_env(env: Sequence[tuple[str, str]]) -> dict[str, str]:
    """The environment of every process rex starts in a jail."""
    out = {"PATH": JAIL_PATH, "HOME": "/root", "USER": "root", "SHELL": "/bin/sh", "TERM": "dumb"}
    out.update(dict(env))
    return out
