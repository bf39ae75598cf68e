"""The typed AST of a ``.rex`` file. Pure values; positions do not take part
in equality, so two files that say the same thing compare equal."""

from __future__ import annotations

import hashlib
import ipaddress
import json
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path


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
class Volume:
    """``VOLUME <name> <path> [<size>]``: a dataset of the jail's own, mounted at
    ``path`` (normalised, absolute, inside the jail), with a quota of ``size`` bytes."""

    name: str
    path: str
    size: int | None = None
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
    volumes: tuple[Volume, ...] = ()
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
    def default_name(self) -> str:
        return self.path.stem if self.path is not None else "jail"

    def canonical(self) -> dict[str, object]:
        """A JSON-able form, without positions: what "the definition" means."""
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
            **({"publish": [str(p) for p in self.publish]} if self.publish else {}),
        }  # fmt: skip

    def digest(self) -> str:
        """SHA-256 of the canonical form (does not cover COPY contents)."""
        text = json.dumps(self.canonical(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()
