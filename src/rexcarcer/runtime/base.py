"""The runtime driver: what starts, stops and enters a jail.

``freebsd`` drives jail(8); ``linux`` stands a jail up from namespaces; ``fake``
keeps jails in memory for unit tests. The engine only sees this Protocol.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Protocol

from rexcarcer.rexfile.ast import IPInterface
from rexcarcer.rexfile.limits import NO_LIMITS, Limits
from rexcarcer.run import Completed, OutputSink

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class JailState(StrEnum):
    RUNNING = "running"
    STOPPED = "stopped"


@dataclass(frozen=True, slots=True)
class Secret:
    """A ``SECRET``'s value, for the runtime to put in ``/run/secrets/<name>``.
    The value never shows in a repr (a log line, an error, a debugger)."""

    name: str
    data: bytes = field(repr=False)


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
    # LIMIT: enforced from the jail's first process on (Linux cgroups and
    # RLIMIT_NOFILE, FreeBSD rctl rules), for exec'd processes too; lifted at stop
    limits: Limits = NO_LIMITS
    # SECRET values, delivered as /run/secrets/<name> (0400) on a memory file
    # system before the jail's /etc/rc runs; never written to the jail's disk
    secrets: tuple[Secret, ...] = ()
    # Networks this jail reaches through its host beyond the platform's own
    # (a jail that publishes a port answers clients anywhere: a default route)
    routes: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()


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
class JailEnd:
    """How a jail's last run ended without ``stop``: its init's exit status as sh(1)
    has it in ``$?`` (128+N: killed by signal N), or None when the runtime cannot
    tell (FreeBSD: a persistent jail has no init whose status anyone collects)."""

    status: int | None

    @property
    def failed(self) -> bool:
        """An exit status other than 0, or none known (RESTART on-failure)."""
        return self.status != 0

    def describe(self) -> str:
        if self.status is None:
            return "it stopped; how is not known"
        if self.status > 128:
            return f"its init was killed by signal {self.status - 128}"
        return f"its init exited with status {self.status}"


@dataclass(frozen=True, slots=True)
class HostFile:
    """A file a runtime writes on the host before it runs its commands (``rex
    plan`` shows it with its content)."""

    path: Path
    content: str
    mode: int = 0o644


@dataclass(frozen=True, slots=True)
class JailStatus:
    name: str
    state: JailState
    pid: int | None = None  # FreeBSD: jid; Linux: the jail's init PID on the host
    # not running, and the runtime remembers a run that ended without `stop`
    ended: JailEnd | None = None
    # status(..., usage=True), a running jail: what it uses now (as usage() answers)
    usage: Mapping[str, int] | None = None


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

    def start_files(self, spec: JailSpec) -> list[HostFile]:
        """The host files ``start`` writes before its commands (``rex plan``)."""
        ...

    def build_files(self, root: Path, network: BuildNet | None = None) -> list[HostFile]:
        """The host files ``build_run`` writes before its commands (``rex plan``)."""
        ...

    def stop(self, name: str) -> None:
        """Stop the jail and every process in it; a no-op when it is not running.
        Also removes what start created on the host (alias, netns, veth)."""
        ...

    def status(self, names: Sequence[str], *, usage: bool = False) -> dict[str, JailStatus]:
        """The state of each named jail (every name gets an entry); for a jail that
        stopped on its own, how its last run ended when the runtime knows; with
        ``usage``, what each running one uses (``rex ls``: one pass over the
        jails instead of a status and then a ``usage`` call for each)."""
        ...

    def exec(
        self,
        name: str,
        argv: Sequence[str],
        *,
        env: Mapping[str, str],
        interactive: bool = False,
        on_output: OutputSink | None = None,
        tty: int | None = None,
        timeout: float | None = None,
    ) -> Completed:
        """Run argv in the running jail, as root, with exactly ``env``; ``tty``: on
        that terminal (a pseudo-terminal's subsidiary side), as its session.
        The exit status is returned, not raised; a command still running after
        ``timeout`` seconds is killed and raises ``CommandFailed``."""
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
        step). The step's own exit status is returned. Every process it started
        is gone when this returns. With ``network`` the step has a jail's
        network (its address on the host's jail network, removed again when the
        step ends); without, none."""
        ...

    def build_cleanup(self, network: BuildNet) -> None:
        """Remove what ``build_run`` set up for ``network`` on the host, if a run
        killed mid-step left it. Idempotent; nothing when there is nothing."""
        ...

    def remove(self, name: str) -> None:
        """Forget the jail: stop it if needed and remove any configuration the
        runtime keeps for it (jail.conf.d file, run files). Idempotent."""
        ...

    def usage(self, name: str) -> dict[str, int]:
        """What the running jail uses now, as far as this host accounts:
        ``memory`` (bytes), ``pids``, ``cpu_ns``, ``oom_kills``, ...; {} when
        nothing is accounted (a stopped jail, accounting off)."""
        ...


JAIL_PATH = "/sbin:/bin:/usr/sbin:/usr/bin:/usr/local/sbin:/usr/local/bin"


def jail_env(env: Sequence[tuple[str, str]]) -> dict[str, str]:
    """The environment of every process rex starts in a jail. PATH comes first
    so that a step finds pkg(8), service(8) and /usr/local: jexec(8) -l sets
    PATH to /bin:/usr/bin, and FreeBSD's sh(1) without PATH uses
    ``_PATH_DEFPATH`` "/usr/bin:/bin" (include/paths.h); a user's PATH wins."""
    out = {"PATH": JAIL_PATH, "HOME": "/root", "USER": "root", "SHELL": "/bin/sh", "TERM": "dumb"}
    out.update(dict(env))
    return out


def build_env(env: Sequence[tuple[str, str]]) -> dict[str, str]:
    """A PROVISION step's environment: the jail's, plus ASSUME_ALWAYS_YES=yes.
    A step has no terminal (stdin is /dev/null), and pkg(7) refuses to
    bootstrap without one unless ASSUME_ALWAYS_YES is set (usr.sbin/pkg/pkg.c
    ``non_interactive_message``: "Please set ASSUME_ALWAYS_YES=yes environment
    variable to be able to bootstrap in non-interactive (stdin not being a
    tty)", exit 1), while pkg install without -y reads EOF as "no" and installs
    nothing (pkg src/utils.c ``vquery_yesno``: "Assume EOF as false"). A user's
    own ASSUME_ALWAYS_YES in ENV wins."""
    out = jail_env(env)
    if not any(k == "ASSUME_ALWAYS_YES" for k, _ in env):
        out["ASSUME_ALWAYS_YES"] = "yes"
    return out
