"""The jail record: one per jail, at ``jails/<name>`` in the state store.

The record is claimed by ``rex up`` with status ``creating`` and the PID (and
start time) of the run that owns it; everything that run creates is rolled back
if it fails, and a later run finds a dead owner and cleans up. It becomes
``ready`` once the jail has started. ``desired`` is what ``rex start``/``stop``
last asked for; the agent keeps the jail in that state.

JSON form (schema 2)::

    {"schema": 2, "name", "host", "status", "desired", "definition", "rexfile",
     "base", "image", "hostname", "address", "services": [{"name","port","proto"}],
     "env": [[key, value]], "created", "pid", "pid_start", "generation",
     "volumes": [{"name","path","size"}], "canonical": {...}}

Schema 1 (rex 0.1) had the same fields without ``schema``; ``from_json``
migrates it. A record with a newer schema is refused, never half-read.
"""

from __future__ import annotations

import dataclasses
import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from rexcarcer.errors import StateError
from rexcarcer.model.keys import jail_key
from rexcarcer.rexfile.ast import IPInterface

SCHEMA = 2


class Status(StrEnum):
    CREATING = "creating"  # a `rex up` owns it (pid, pid_start)
    READY = "ready"
    UPDATING = "updating"  # a `rex up`/`rex rollback` replaces its generation (pid, pid_start)


class Desired(StrEnum):
    RUNNING = "running"
    STOPPED = "stopped"


@dataclass(frozen=True, slots=True)
class ServiceEntry:
    """``SERVICE <name> PORT <n> [PROTO tcp|udp]`` as recorded (validated by the parser)."""

    name: str
    port: int
    proto: str = "tcp"

    def as_json(self) -> dict[str, Any]:
        return {"name": self.name, "port": self.port, "proto": self.proto}


@dataclass(frozen=True, slots=True)
class VolumeEntry:
    """``VOLUME <name> <path> [<size>]`` as recorded."""

    name: str
    path: str
    size: int | None = None

    def as_json(self) -> dict[str, Any]:
        return {"name": self.name, "path": self.path, "size": self.size}


@dataclass(frozen=True, slots=True)
class PublishEntry:
    """``PUBLISH <host_port>:<port>/<proto> [ON <on>]`` as recorded."""

    host_port: int
    port: int
    proto: str = "tcp"
    on: str | None = None  # one of the host's addresses; None: all of them

    def as_json(self) -> dict[str, Any]:
        return {"host_port": self.host_port, "port": self.port, "proto": self.proto,
                "on": self.on}  # fmt: skip

    def __str__(self) -> str:
        on = f"{self.on}:" if self.on else ""
        return f"{on}{self.host_port}->{self.port}/{self.proto}"


def _publish(data: Mapping[str, Any]) -> PublishEntry:
    ports = (data["host_port"], data["port"])
    if any(type(p) is not int or not 1 <= p <= 65535 for p in ports):
        raise ValueError(f"published port: bad port in {dict(data)!r}")
    proto = data.get("proto", "tcp")
    if proto not in ("tcp", "udp"):
        raise ValueError(f"published port: bad protocol {proto!r}")
    on = data.get("on")
    return PublishEntry(ports[0], ports[1], proto,
                        str(ipaddress.ip_address(on)) if on else None)  # fmt: skip


@dataclass(frozen=True, slots=True)
class JailRecord:
    name: str
    host: str = ""
    status: Status = Status.CREATING
    desired: Desired = Desired.RUNNING
    definition: str = ""  # Rexfile.digest()
    rexfile: str = ""  # where it came from (informational)
    base: str = ""  # the BASE reference as written
    image: str = ""  # images/<key>@img or bases/<name>@<version>
    hostname: str = ""
    address: IPInterface | None = None
    services: tuple[ServiceEntry, ...] = ()
    env: tuple[tuple[str, str], ...] = ()
    created: int = 0
    pid: int | None = None  # the owning `rex up` while creating
    pid_start: int | None = None  # its start time: PID + start time name one process
    generation: int = 1  # bumped by every update in place (jails/<name> is the current one)
    replacing: int = 0  # while UPDATING: the generation being replaced (the run's journal)
    volumes: tuple[VolumeEntry, ...] = ()
    publish: tuple[PublishEntry, ...] = ()
    # Rexfile.canonical() of the definition: what `rex plan` compares to say
    # which instruction an update changes
    canonical: dict[str, Any] = dataclasses.field(default_factory=dict, compare=False)

    @property
    def key(self) -> str:
        return jail_key(self.name)

    @property
    def ready(self) -> bool:
        return self.status is Status.READY

    @property
    def wants_running(self) -> bool:
        return self.desired is Desired.RUNNING

    def replace(self, **changes: Any) -> JailRecord:
        return dataclasses.replace(self, **changes)

    def as_json(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA, "name": self.name, "host": self.host,
            "status": str(self.status), "desired": str(self.desired),
            "definition": self.definition, "rexfile": self.rexfile, "base": self.base,
            "image": self.image, "hostname": self.hostname,
            "address": str(self.address) if self.address is not None else None,
            "services": [s.as_json() for s in self.services],
            "env": [list(kv) for kv in self.env], "created": self.created,
            "pid": self.pid, "pid_start": self.pid_start, "generation": self.generation,
            "replacing": self.replacing,
            "volumes": [v.as_json() for v in self.volumes], "canonical": self.canonical,
            "publish": [p.as_json() for p in self.publish],
        }  # fmt: skip

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> JailRecord:
        """Read a record of any schema this release knows (migrating older ones)."""
        try:
            schema = int(data.get("schema", 1))
            if schema > SCHEMA:
                raise StateError(
                    f"jail record {data.get('name')!r} has schema {schema}; this rex reads "
                    f"up to {SCHEMA}",
                    hint="upgrade rex on this host to the release that wrote it",
                )
            return cls._from_v2(_migrate_v1(data) if schema == 1 else data)
        except (KeyError, TypeError, ValueError) as exc:
            raise StateError(
                f"malformed jail record {data.get('name')!r}: {exc}",
                hint="`rex destroy NAME` removes a jail whose record is damaged",
            ) from exc

    @classmethod
    def _from_v2(cls, d: Mapping[str, Any]) -> JailRecord:
        address = d.get("address")
        return cls(
            name=str(d["name"]), host=str(d.get("host") or ""),
            status=Status(d.get("status") or "creating"),
            desired=Desired(d.get("desired") or "running"),
            definition=str(d.get("definition") or ""), rexfile=str(d.get("rexfile") or ""),
            base=str(d.get("base") or ""), image=str(d.get("image") or ""),
            hostname=str(d.get("hostname") or ""),
            address=ipaddress.ip_interface(address) if address else None,
            services=tuple(_service(s) for s in d.get("services") or ()),
            env=tuple((str(k), str(v)) for k, v in d.get("env") or ()),
            created=int(d.get("created") or 0), pid=_opt_int(d.get("pid")),
            pid_start=_opt_int(d.get("pid_start")), generation=int(d.get("generation") or 1),
            replacing=int(d.get("replacing") or 0),
            volumes=tuple(VolumeEntry(str(v["name"]), str(v["path"]), _opt_int(v.get("size")))
                          for v in d.get("volumes") or ()),
            canonical=dict(d.get("canonical") or {}),
            publish=tuple(_publish(p) for p in d.get("publish") or ()),
        )  # fmt: skip


def _service(data: Mapping[str, Any]) -> ServiceEntry:
    port, proto = data["port"], data.get("proto", "tcp")
    if type(port) is not int or not 1 <= port <= 65535:
        raise ValueError(f"service {data.get('name')!r}: bad port {port!r}")
    if proto not in ("tcp", "udp"):
        raise ValueError(f"service {data.get('name')!r}: bad protocol {proto!r}")
    return ServiceEntry(str(data["name"]), port, proto)


def _opt_int(value: Any) -> int | None:
    return int(value) if isinstance(value, int) and not isinstance(value, bool) else None


def _migrate_v1(data: Mapping[str, Any]) -> dict[str, Any]:
    """Schema 1 (rex 0.1): no schema field; a ready record dropped pid/pid_start.
    Its status may be missing in records written before `status` existed."""
    out = dict(data)
    out["schema"] = SCHEMA
    out.setdefault("status", "ready" if data.get("image") else "creating")
    return out


@dataclass(frozen=True, slots=True)
class JailInfo:
    """A jail as ``rex ls`` shows it: its record plus what the runtime says."""

    name: str
    state: str  # running, stopped, creating
    address: str | None
    hostname: str
    services: tuple[ServiceEntry, ...]
    base: str
    image: str
    host: str
    publish: tuple[PublishEntry, ...] = ()

    @classmethod
    def of(cls, rec: JailRecord, state: str) -> JailInfo:
        return cls(rec.name, state if rec.ready else "creating",
                   str(rec.address) if rec.address is not None else None, rec.hostname,
                   rec.services, rec.base, rec.image, rec.host, rec.publish)  # fmt: skip

    def as_json(self) -> dict[str, Any]:
        return {
            "name": self.name, "state": self.state, "ips": [self.address] if self.address else [],
            "hostname": self.hostname, "services": [s.as_json() for s in self.services],
            "base": self.base, "image": self.image, "host": self.host,
            "publish": [p.as_json() for p in self.publish],
        }  # fmt: skip

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> JailInfo:
        ips = d.get("ips") or []
        return cls(
            str(d["name"]), str(d["state"]), str(ips[0]) if ips else None,
            str(d.get("hostname", "")),
            tuple(ServiceEntry(str(s["name"]), int(s["port"]), str(s.get("proto", "tcp")))
                  for s in d.get("services", ())),
            str(d.get("base", "")), str(d.get("image", "")), str(d.get("host", "")),
            tuple(_publish(p) for p in d.get("publish") or ()),
        )  # fmt: skip


@dataclass(frozen=True, slots=True)
class GenerationInfo:
    """One generation of a jail, as ``rex history`` shows it."""

    generation: int
    current: bool
    created: int
    image: str
    base: str
    definition: str

    def as_json(self) -> dict[str, object]:
        return {
            "generation": self.generation, "current": self.current, "created": self.created,
            "image": self.image, "base": self.base, "definition": self.definition,
        }  # fmt: skip

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> GenerationInfo:
        return cls(int(d["generation"]), bool(d["current"]), int(d["created"]), str(d["image"]),
                   str(d["base"]), str(d["definition"]))  # fmt: skip


@dataclass(frozen=True, slots=True)
class VolumeInfo:
    """A volume as ``rex volume ls`` shows it."""

    jail: str
    name: str
    path: str
    size: int | None  # the quota, None: none
    used: int
    attached: bool  # named by the jail's current definition
    snapshots: tuple[str, ...]

    def as_json(self) -> dict[str, object]:
        return {
            "jail": self.jail, "name": self.name, "path": self.path, "size": self.size,
            "used": self.used, "attached": self.attached, "snapshots": list(self.snapshots),
        }  # fmt: skip

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> VolumeInfo:
        size = d.get("size")
        return cls(str(d["jail"]), str(d["name"]), str(d["path"]),
                   int(size) if size is not None else None, int(d["used"]), bool(d["attached"]),
                   tuple(str(s) for s in d.get("snapshots", ())))  # fmt: skip
