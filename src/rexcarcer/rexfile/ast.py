"""The typed AST of a ``.rex`` file. Pure values; positions do not take part
in equality, so two files that say the same thing compare equal."""

from __future__ import annotations

import hashlib
import ipaddress
import json
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

from rexcarcer.rexfile.limits import NO_LIMITS, Limits


class Proto(StrEnum):
    TCP = "tcp"
    UDP = "udp"


@dataclass(frozen=True, slots=True)
class Pos:
    line: int
    col: int


@dataclass(frozen=True, slots=True)
class Base:
    """``BASE <url-or-name> [sha256:<hex>]``."""

    ref: str
    pin: str | None = None  # lower-case hex digest of the manifest, without "sha256:"
    pos: Pos = field(default=Pos(1, 1), compare=False)

    @property
    def is_url(self) -> bool:
        return "://" in self.ref


@dataclass(frozen=True, slots=True)
class Run:
    """``PROVISION RUN <shell command>``: run with ``/bin/sh -c`` in the jail."""

    command: str
    pos: Pos = field(default=Pos(1, 1), compare=False)

    def describe(self) -> str:
        return f"PROVISION RUN {self.command}"


@dataclass(frozen=True, slots=True)
class Copy:
    """``PROVISION COPY <src> <dst>``: src relative to the .rex file's directory."""

    src: str
    dst: str
    pos: Pos = field(default=Pos(1, 1), compare=False)

    def describe(self) -> str:
        return f"PROVISION COPY {self.src} {self.dst}"


Step = Run | Copy


@dataclass(frozen=True, slots=True)
class Service:
    """``SERVICE <name> PORT <n> [PROTO tcp|udp]``."""

    name: str
    port: int
    proto: Proto = Proto.TCP
    pos: Pos = field(default=Pos(1, 1), compare=False)


@dataclass(frozen=True, slots=True)
class Enable:
    """``ENABLE <service> [FLAGS <text>]``: the service's rc.conf.d file, written
    at every start (``<service>_enable="YES"``, ``<service>_flags=...``)."""

    service: str
    flags: str | None = None
    pos: Pos = field(default=Pos(1, 1), compare=False)


@dataclass(frozen=True, slots=True)
class Volume:
    """``VOLUME <name> <path> [<size>]``: a dataset of the jail's own, mounted at
    ``path`` (normalised, absolute, inside the jail), with a quota of ``size`` bytes."""

    name: str
    path: str
    size: int | None = None
    pos: Pos = field(default=Pos(1, 1), compare=False)


class Probe(StrEnum):
    CMD = "cmd"
    TCP = "tcp"
    HTTP = "http"


class RestartPolicy(StrEnum):
    """``RESTART``: what the host agent does when a running jail stops on its own
    (docs/agent.md): never restart it, restart it when it failed, or always."""

    NO = "no"
    ON_FAILURE = "on-failure"
    ALWAYS = "always"


# HEALTHCHECK defaults (docs/rexfile.md): a probe every 10 s, 5 s to answer,
# unhealthy after 3 failures in a row.
DEFAULT_INTERVAL_MS = 10_000
DEFAULT_TIMEOUT_MS = 5_000
DEFAULT_RETRIES = 3


def format_duration(ms: int) -> str:
    """``ms`` as the shortest duration the parser reads back (10s, 1500ms, 2m)."""
    for unit, size in (("h", 3_600_000), ("m", 60_000), ("s", 1000)):
        if ms % size == 0:
            return f"{ms // size}{unit}"
    return f"{ms}ms"


@dataclass(frozen=True, slots=True)
class HealthCheck:
    """``HEALTHCHECK [INTERVAL d] [TIMEOUT d] [RETRIES n] CMD <command> | TCP <port> |
    HTTP <port> <path>``: how the host agent tells a running jail is healthy."""

    probe: Probe
    command: str = ""  # CMD: run with /bin/sh -c in the jail
    port: int = 0  # TCP, HTTP: on the jail's address, from the host
    path: str = ""  # HTTP: the request target, "/..."
    interval_ms: int = DEFAULT_INTERVAL_MS
    timeout_ms: int = DEFAULT_TIMEOUT_MS
    retries: int = DEFAULT_RETRIES
    pos: Pos = field(default=Pos(1, 1), compare=False)

    def target(self) -> str:
        """The probe as written: ``CMD ...``, ``TCP 80``, ``HTTP 80 /health``."""
        if self.probe is Probe.CMD:
            return f"CMD {self.command}"
        if self.probe is Probe.TCP:
            return f"TCP {self.port}"
        return f"HTTP {self.port} {self.path}"

    def describe(self) -> str:
        interval, timeout = format_duration(self.interval_ms), format_duration(self.timeout_ms)
        return (
            f"HEALTHCHECK INTERVAL {interval} TIMEOUT {timeout} RETRIES {self.retries} "
            f"{self.target()}"
        )

    def canonical(self) -> dict[str, object]:
        out: dict[str, object] = {"probe": str(self.probe), "interval": self.interval_ms,
                                  "timeout": self.timeout_ms, "retries": self.retries}  # fmt: skip
        if self.probe is Probe.CMD:
            out["command"] = self.command
        else:
            out["port"] = self.port
        if self.probe is Probe.HTTP:
            out["path"] = self.path
        return out


@dataclass(frozen=True, slots=True)
class Depend:
    """``DEPENDS <jail>``: start this jail after that one is healthy (or running)."""

    name: str
    pos: Pos = field(default=Pos(1, 1), compare=False)


IPInterface = ipaddress.IPv4Interface | ipaddress.IPv6Interface
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True, slots=True)
class Publish:
    """``PUBLISH <hostport>:<port>[/tcp|udp] [ON <address>]``: traffic to the
    host (or to ``on``, one of its addresses) on ``host_port`` reaches the
    jail's ``port``."""

    host_port: int
    port: int
    proto: Proto = Proto.TCP
    on: IPAddress | None = None
    pos: Pos = field(default=Pos(1, 1), compare=False)

    def __str__(self) -> str:
        on = f" ON {self.on}" if self.on is not None else ""
        return f"{self.host_port}:{self.port}/{self.proto}{on}"


@dataclass(frozen=True, slots=True)
class Rexfile:
    base: Base
    steps: tuple[Step, ...] = ()
    env: tuple[tuple[str, str], ...] = ()
    hostname: str | None = None
    ip: IPInterface | None = None
    services: tuple[Service, ...] = ()
    enable: tuple[Enable, ...] = ()
    volumes: tuple[Volume, ...] = ()
    limits: Limits = NO_LIMITS  # LIMIT lines; unset resources are unlimited
    secrets: tuple[str, ...] = ()  # SECRET names, in order (values live on the host)
    healthcheck: HealthCheck | None = None
    restart: RestartPolicy | None = None  # None: not written (the agent's default, on-failure)
    depends: tuple[Depend, ...] = ()
    publish: tuple[Publish, ...] = ()
    path: Path | None = field(default=None, compare=False)
    # The name a user knows the file by, when it was unpacked elsewhere (an agent
    # building a client's context): used in messages instead of ``path``.
    origin: str | None = field(default=None, compare=False)

    @property
    def display(self) -> str:
        """The file as messages name it."""
        return self.origin or (str(self.path) if self.path is not None else "<input>")

    @property
    def context_dir(self) -> Path:
        """The directory COPY sources are relative to."""
        return self.path.parent if self.path is not None else Path.cwd()

    @property
    def supervised(self) -> bool:
        """Whether the file asks for what only the host agent does (docs/agent.md)."""
        return self.healthcheck is not None or self.restart is not None or bool(self.depends)

    @property
    def default_name(self) -> str:
        return self.path.stem if self.path is not None else "jail"

    def canonical(self) -> dict[str, object]:
        """A JSON-able form, without positions: what "the definition" means.
        Instructions added after 0.1 appear only when used, so the digest of a
        file that does not use them stays what it was."""
        return {
            "base": {"ref": self.base.ref, "pin": self.base.pin},
            "steps": [
                {"run": s.command} if isinstance(s, Run) else {"copy": [s.src, s.dst]}
                for s in self.steps
            ],
            "env": [list(kv) for kv in self.env],
            "hostname": self.hostname,
            "ip": str(self.ip) if self.ip is not None else None,
            "services": [[s.name, s.port, str(s.proto)] for s in self.services],
            # instructions added after 0.1 appear only when used, so that the
            # digest of a file written for 0.1 does not change
            **({"volumes": [[v.name, v.path, v.size] for v in self.volumes]}
               if self.volumes else {}),
            **({"limits": self.limits.as_json()} if self.limits else {}),
            **({"secrets": list(self.secrets)} if self.secrets else {}),
            **({"healthcheck": self.healthcheck.canonical()} if self.healthcheck else {}),
            **({"restart": str(self.restart)} if self.restart is not None else {}),
            **({"depends": [d.name for d in self.depends]} if self.depends else {}),
            **({"enable": [[e.service, e.flags] for e in self.enable]} if self.enable else {}),
            **({"publish": [str(p) for p in self.publish]} if self.publish else {}),
        }  # fmt: skip

    def digest(self) -> str:
        """SHA-256 of the canonical form (does not cover COPY contents)."""
        text = json.dumps(self.canonical(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()
