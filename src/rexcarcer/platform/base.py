"""What a platform provides: the jail runtime and every piece of OS knowledge the
features need (where unbound keeps its files, how a jail forwards its syslog,
how routes and forwarding are set, which tools must exist, how a process is
told alive).

Features and the engine only see ``Platform``; the OS modules implement it.
A platform is built from the host's configuration, read through
``PlatformConfig`` (the settings it uses), so this layer does not depend on
how the configuration is loaded.
"""

from __future__ import annotations

import ipaddress
import os
import secrets
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Protocol

from rexcarcer.firewall.base import Firewall
from rexcarcer.platform.kinds import PlatformKind
from rexcarcer.platform.timesync import TimeService
from rexcarcer.rexfile.limits import Limits
from rexcarcer.runtime.base import Runtime

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class PublicRangeLike(Protocol):
    """A public range declared for jails (``rexcarcer.config.PublicRange``)."""

    @property
    def network(self) -> Network: ...
    @property
    def interface(self) -> str: ...


class PlatformConfig(Protocol):
    """The settings a platform reads (``rexcarcer.config.Config`` has them)."""

    @property
    def root(self) -> Path: ...
    @property
    def interface(self) -> str: ...
    @property
    def subnet(self) -> Network: ...
    @property
    def host_address(self) -> Address: ...
    @property
    def unbound_control(self) -> Path: ...
    @property
    def etcd(self) -> tuple[str, ...]: ...
    @property
    def cluster_cidr(self) -> Network | None: ...
    @property
    def chrony_socket(self) -> Path | None: ...
    @property
    def boot_id_file(self) -> Path | None: ...
    @property
    def public_ips(self) -> Sequence[PublicRangeLike]: ...
    @property
    def nat(self) -> bool: ...


class Flavour(StrEnum):
    REX = "rex"  # rex's own unbound, configured entirely by rex
    LOCAL_UNBOUND = "local_unbound"  # FreeBSD's base resolver


@dataclass(frozen=True, slots=True)
class UnboundLayout:
    """Where the DNS files live, per flavour of unbound."""

    flavour: Flavour
    workdir: Path  # unbound's directory:
    conf: Path  # the file unbound is started with (-c)
    server_conf: Path  # rex's server: settings (the same file as conf for REX)
    data: Path  # the persisted records, an include: file
    control: Path  # the control socket
    unbound: str  # the daemon
    checkconf: str  # its configuration checker
    log: Path  # the daemon's output under `rex host serve`
    state: Path  # `rex host serve`'s PIDs


@dataclass(frozen=True, slots=True)
class PeerIds:
    """Who is at the other end of a UNIX socket, as the kernel says."""

    uid: int
    gids: frozenset[int]
    pid: int | None = None


# -- rex host setup ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SetupFile:
    """A file (``content``) or directory (``content`` None) setup makes."""

    path: Path
    content: str | None
    why: str
    mode: int = 0o644


@dataclass(frozen=True, slots=True)
class SetupCommand:
    argv: tuple[str, ...]
    why: str


SetupStep = SetupFile | SetupCommand


@dataclass(frozen=True, slots=True)
class SetupInputs:
    """What the features render for ``rex host setup``; the platform decides
    where it goes and which commands make the OS run it."""

    unbound: tuple[SetupFile, ...]  # rex's unbound configuration and persisted records
    unbound_server: Path  # the file among them whose change needs a restart
    collector: tuple[SetupFile, ...]  # the log collector's files; empty: no rsyslogd
    collector_check: tuple[str, ...]  # the command that checks its configuration
    collector_rc: str  # FreeBSD: the collector's rc.d script
    serve: tuple[str, ...]  # `rex host serve` (Linux: the unit's ExecStart)
    serve_env: tuple[tuple[str, str], ...] = ()  # the REX_* settings the unit passes on
    agent: tuple[str, ...] = ()  # `rex agent` (Linux: its unit's ExecStart)


@dataclass(frozen=True, slots=True)
class HostFacts:
    """What ``rex host setup`` reads before it decides (read-only probes)."""

    interfaces: frozenset[str] = frozenset()  # every interface (ifconfig -l)
    addresses: frozenset[str] = frozenset()  # the jail interface's addresses
    rc_conf: tuple[tuple[str, str], ...] = ()  # FreeBSD: sysrc -a
    running: frozenset[str] = frozenset()  # services that run now
    files: tuple[tuple[str, str | None], ...] = ()  # files setup depends on: content or None
    service_manager: bool = True  # Linux: systemd is PID 1
    tools: frozenset[str] = frozenset()  # optional programs that are installed (rsyslogd)

    def rc(self, name: str, default: str = "") -> str:
        return dict(self.rc_conf).get(name, default)

    def file(self, path: Path | str) -> str | None:
        return dict(self.files).get(str(path))


@dataclass(frozen=True, slots=True)
class HostCheck:
    """One ``rex doctor`` line the platform contributes."""

    name: str
    ok: bool
    detail: str


class RouteTable(Protocol):
    """The routes rex installs on the host (to the other hosts' jail subnets)."""

    def current(self) -> dict[Network, Address]:
        """The routes rex installed, as far as it can tell."""
        ...

    def add(self, net: Network, via: Address) -> None: ...

    def delete(self, net: Network) -> None:
        """Remove the route; already gone is fine."""
        ...


class Platform(Protocol):
    @property
    def kind(self) -> PlatformKind: ...

    @property
    def runtime(self) -> Runtime: ...

    @property
    def routes(self) -> RouteTable: ...

    @property
    def hostname_file(self) -> str | None:
        """The file inside a jail that holds its host name, if the OS has one
        (Linux /etc/hostname; FreeBSD none: rc reads no such file, the name is
        the jail's host.hostname, libexec/rc/rc.d/hostname)."""
        ...

    @property
    def firewall(self) -> Firewall:
        """rex's own part of the host's firewall (nftables table ``inet
        rexcarcer``, pf anchors ``rexcarcer/*``); never anything else."""
        ...

    @property
    def collector_freebind(self) -> bool:
        """Whether the log collector may bind the jail-subnet address before it
        exists (IP_FREEBIND on Linux; FreeBSD's rsyslog has no such option)."""
        ...

    def tools(self) -> tuple[str, ...]:
        """The commands this platform needs (``rex doctor``)."""
        ...

    def host_addresses(self) -> tuple[Address, ...]:
        """Every address on this host's interfaces (loopback included), as the
        kernel lists them now."""
        ...

    def unbound_layout(self) -> UnboundLayout: ...

    def syslog_files(self, target: Address, port: int) -> list[tuple[str, bytes, int]]:
        """(path inside the jail, content, mode) of the forwarding files rex
        writes whole (``write_syslog_forwarding`` may also edit one the jail has)."""

    def time_service(self) -> TimeService:
        """The host's time daemon: is the clock synchronised (``rex doctor``), and
        what makes a daemon run (``rex host setup``)."""
        ...

    def write_syslog_forwarding(self, root: Path, target: Address, port: int) -> None:
        """Write the files that make a jail (root ``root``) forward its syslog to
        ``target:port``, through the race-free jail-root module."""
        ...

    def enable_forwarding(self) -> None:
        """Let jail traffic between hosts pass through this host."""
        ...

    def process_start(self, pid: int) -> float | None:
        """The start time of ``pid`` as psutil gives it (PID + start time name one
        process for the life of the system), or None when no such process runs."""
        ...

    def process_alive(
        self, pid: int, start: float | None = None, *, ticks: int | None = None
    ) -> bool:
        """Whether ``pid`` runs (and, with ``start``, is the same process; with
        ``ticks``, the start time a rex 0.1 record holds). A zombie is dead."""
        ...

    def peer_ids(self, sock: socket.socket) -> PeerIds:
        """The credentials of a connected UNIX socket's peer (the agent's socket)."""
        ...

    def check_limits(self, limits: Limits) -> None:
        """Refuse (a LimitError, before anything changes) LIMIT values this host
        cannot enforce: a missing cgroup controller, rctl(8) accounting off."""
        ...

    def boot_id(self) -> str:
        """Names this boot of the host: the same until it reboots, then another
        (the agent tells "started at boot" from "restarted", docs/agent.md)."""
        ...

    def setup_facts(self) -> HostFacts:
        """Read what ``rex host setup`` decides on (read-only commands and files)."""
        ...

    def fresh_facts(self) -> HostFacts:
        """The facts of a freshly installed host (a dry run for another OS)."""
        ...

    def setup_steps(self, inputs: SetupInputs, facts: HostFacts) -> list[SetupStep]:
        """What ``rex host setup`` writes and runs, in order, on a host with ``facts``."""
        ...

    def doctor_checks(self) -> list[HostCheck]:
        """This OS's own ``rex doctor`` checks (read-only)."""
        ...

    def collector_listening(
        self, pidfile: Path, conf: Path, address: Address, port: int
    ) -> int | None:
        """The PID of the log collector (rsyslogd started with ``conf``) once it
        has a UDP socket bound to ``address:port``, else None."""
        ...

    def update_base(self, root: Path, current: str) -> None:
        """Apply the OS's security updates to the base tree at ``root`` (a clone
        no jail has run in), which is at release ``current``."""
        ...

    def install_trust(self, root: Path, ca_pem: bytes) -> None:
        """Make the TLS library of the jail at ``root`` trust ``ca_pem`` (the
        cluster CA), writing through jailfs only: no host tool runs over the
        jail's tree."""
        ...


def boot_marker(path: Path) -> str:
    """A random token in ``path``, a file the OS removes at boot: the first caller
    in a boot makes it (link(2) never replaces, so racing callers agree)."""
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        pass
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.write_text(secrets.token_hex(16) + "\n")
    try:
        os.link(tmp, path)
    except FileExistsError:
        pass
    finally:
        tmp.unlink(missing_ok=True)
    return path.read_text().strip()


def jail_routes(config: PlatformConfig) -> tuple[Network, ...]:
    """What a jail reaches through its host: in a cluster, the other hosts'
    jail subnets (the cluster CIDR); everything else only with egress NAT on
    (``nat``: a default route to the host, which masquerades it). Without
    NAT never a default route: a jail's traffic to the world would leave
    with an address nobody routes back."""
    out: list[Network] = []
    if config.etcd and config.cluster_cidr is not None:
        out.append(config.cluster_cidr)
    if config.nat:
        out.append(ipaddress.ip_network("0.0.0.0/0" if config.subnet.version == 4 else "::/0"))
    return tuple(out)
