"""The jail record: one per jail, at ``jails/<name>`` in the state store.

The record is claimed by ``rex up`` with status ``creating`` and the PID (and
start time) of the run that owns it; everything that run creates is rolled back
if it fails, and a later run finds a dead owner and cleans up. It becomes
``ready`` once the jail has started. ``desired`` is what ``rex start``/``stop``
last asked for; the agent keeps the jail in that state.

JSON form (schema 3)::

    {"schema": 3, "name", "host", "status", "desired", "definition", "rexfile",
     "base", "image", "hostname", "address", "services": [{"name","port","proto"}],
     "env": [[key, value]], "enable": [[service, flags or null]], "created",
     "pid", "pid_start", "pid_ticks", "generation", "replacing",
     "volumes": [{"name","path","size"}], "limits": {"memory", "cpu", "pids",
     "openfiles"}, "secrets": [name], "canonical": {...},
     "healthcheck": {"probe", "command"|"port", "path", "interval", "timeout",
                     "retries"} | null, "restart": "no"|"on-failure"|"always",
     "depends": [jail, ...], "retired"}

``limits`` holds the LIMIT values that are set; ``secrets`` only the names of
the SECRET lines: a secret's value is never in the record (secret/).
The fields after ``canonical`` were added without a schema change: a record
without them reads as no health check, ``on-failure`` and no dependencies.
``retired`` (nanoseconds since the epoch) is set on a kept earlier generation
only: when it stopped being the current one, which orders ``rex rollback``'s
default target and what is pruned (engine/update.py); absent reads as 0.

``pid_start`` is the owning run's start time as psutil gives it (seconds since
the epoch, runtime/process.py). Schema 1 (rex 0.1) had the fields of schema 2
without ``schema``; schema 2 had no ``enable`` and its ``pid_start`` was the
Linux ``/proc/PID/stat`` start time in clock ticks after boot, which
``from_json`` moves to ``pid_ticks`` (still checked by the Linux platform, so a
run that was creating a jail across an upgrade is never taken for dead).
``generation``, ``replacing``, ``volumes`` and ``canonical`` are optional (a
record without them is generation 1 with no volumes). A record with a newer
schema is refused, never half-read.
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
from rexcarcer.rexfile.ast import HealthCheck, IPInterface, Probe, RestartPolicy
from rexcarcer.rexfile.limits import NO_LIMITS, Limits

SCHEMA = 3


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
    # ENABLE <service> [FLAGS <text>]: rc.conf.d files written at every start
    enable: tuple[tuple[str, str | None], ...] = ()
    created: int = 0
    pid: int | None = None  # the owning `rex up` while creating
    pid_start: float | None = None  # its start time: PID + start time name one process
    pid_ticks: int | None = None  # a schema-2 record's start time (Linux clock ticks)
    generation: int = 1  # bumped by every update in place (jails/<name> is the current one)
    replacing: int = 0  # while UPDATING: the generation being replaced (the run's journal)
    volumes: tuple[VolumeEntry, ...] = ()
    limits: Limits = NO_LIMITS
    secrets: tuple[str, ...] = ()  # names only
    publish: tuple[PublishEntry, ...] = ()
    # Rexfile.canonical() of the definition: what `rex plan` compares to say
    # which instruction an update changes
    canonical: dict[str, Any] = dataclasses.field(default_factory=dict, compare=False)
    healthcheck: HealthCheck | None = None
    restart: RestartPolicy = RestartPolicy.ON_FAILURE
    depends: tuple[str, ...] = ()
    retired: int = 0  # a kept generation: when it stopped being current (ns)

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
            "env": [list(kv) for kv in self.env],
            "enable": [list(kv) for kv in self.enable], "created": self.created,
            "pid": self.pid, "pid_start": self.pid_start, "pid_ticks": self.pid_ticks,
            "generation": self.generation, "replacing": self.replacing,
            "volumes": [v.as_json() for v in self.volumes], "canonical": self.canonical,
            "limits": self.limits.as_json(), "secrets": list(self.secrets),
            "healthcheck": self.healthcheck.canonical() if self.healthcheck else None,
            "restart": str(self.restart), "depends": list(self.depends),
            "publish": [p.as_json() for p in self.publish],
            **({"retired": self.retired} if self.retired else {}),
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
            if schema == 1:
                data = _migrate_v1(data)
            if schema <= 2:
                data = _migrate_v2(data)
            return cls._from_v3(data)
        except (KeyError, TypeError, ValueError) as exc:
            raise StateError(
                f"malformed jail record {data.get('name')!r}: {exc}",
                hint="`rex destroy NAME` removes a jail whose record is damaged",
            ) from exc

    @classmethod
    def _from_v3(cls, d: Mapping[str, Any]) -> JailRecord:
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
            enable=tuple(_enable(e) for e in d.get("enable") or ()),
            created=int(d.get("created") or 0), pid=_opt_int(d.get("pid")),
            pid_start=_opt_float(d.get("pid_start")), pid_ticks=_opt_int(d.get("pid_ticks")),
            generation=int(d.get("generation") or 1), replacing=int(d.get("replacing") or 0),
            volumes=tuple(VolumeEntry(str(v["name"]), str(v["path"]), _opt_int(v.get("size")))
                          for v in d.get("volumes") or ()),
            limits=Limits.from_json(d.get("limits")),
            secrets=tuple(str(s) for s in d.get("secrets") or ()),
            canonical=dict(d.get("canonical") or {}),
            healthcheck=_healthcheck(d["healthcheck"]) if d.get("healthcheck") else None,
            restart=RestartPolicy(d.get("restart") or "on-failure"),
            depends=tuple(str(n) for n in d.get("depends") or ()),
            publish=tuple(_publish(p) for p in d.get("publish") or ()),
            retired=int(d.get("retired") or 0),
        )  # fmt: skip


def _service(data: Mapping[str, Any]) -> ServiceEntry:
    port, proto = data["port"], data.get("proto", "tcp")
    if type(port) is not int or not 1 <= port <= 65535:
        raise ValueError(f"service {data.get('name')!r}: bad port {port!r}")
    if proto not in ("tcp", "udp"):
        raise ValueError(f"service {data.get('name')!r}: bad protocol {proto!r}")
    return ServiceEntry(str(data["name"]), port, proto)


def _healthcheck(data: Mapping[str, Any]) -> HealthCheck:
    """The check as ``HealthCheck.canonical()`` wrote it, every field checked."""
    probe = Probe(data["probe"])
    ints = {k: data[k] for k in ("interval", "timeout", "retries")}
    if any(type(v) is not int or v < 1 for v in ints.values()):
        raise ValueError(f"health check: bad timing {ints!r}")
    port = data.get("port", 0) if probe is not Probe.CMD else 0
    if probe is not Probe.CMD and (type(port) is not int or not 1 <= port <= 65535):
        raise ValueError(f"health check: bad port {port!r}")
    command = str(data.get("command", "")) if probe is Probe.CMD else ""
    path = str(data.get("path", "")) if probe is Probe.HTTP else ""
    if (probe is Probe.CMD and not command) or (probe is Probe.HTTP and not path.startswith("/")):
        raise ValueError("health check: no command or path")
    return HealthCheck(probe, command, port, path, ints["interval"], ints["timeout"],
                       ints["retries"])  # fmt: skip


def _enable(entry: Any) -> tuple[str, str | None]:
    service, flags = entry
    return str(service), None if flags is None else str(flags)


def _opt_int(value: Any) -> int | None:
    return int(value) if isinstance(value, int) and not isinstance(value, bool) else None


def _opt_float(value: Any) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return None


def _migrate_v1(data: Mapping[str, Any]) -> dict[str, Any]:
    """Schema 1 (rex 0.1): no schema field; a ready record dropped pid/pid_start.
    Its status may be missing in records written before `status` existed."""
    out = dict(data)
    out["schema"] = 2
    out.setdefault("status", "ready" if data.get("image") else "creating")
    return out


def _migrate_v2(data: Mapping[str, Any]) -> dict[str, Any]:
    """Schema 2: ``pid_start`` was /proc/PID/stat's starttime (clock ticks after
    boot, Linux; FreeBSD never had one): kept as ``pid_ticks``."""
    out = dict(data)
    out["schema"] = SCHEMA
    out["pid_ticks"] = out.pop("pid_start", None)
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
    limits: Limits = NO_LIMITS
    # what the running jail uses now (runtime usage(): memory, pids, cpu_ns, ...)
    usage: Mapping[str, int] = dataclasses.field(default_factory=dict)
    created: int = 0  # seconds since the epoch; 0 from an agent older than this field
    # healthy, unhealthy, starting (HEALTHCHECK; model/health.py), exited (stopped on
    # its own and left down by its RESTART policy); None: nothing to say
    health: str | None = None
    publish: tuple[PublishEntry, ...] = ()

    @classmethod
    def of(
        cls, rec: JailRecord, state: str, health: str | None = None,
        usage: Mapping[str, int] | None = None,
    ) -> JailInfo:  # fmt: skip
        return cls(rec.name, state if rec.ready else "creating",
                   str(rec.address) if rec.address is not None else None, rec.hostname,
                   rec.services, rec.base, rec.image, rec.host, rec.limits,
                   dict(usage or {}), rec.created, health, rec.publish)  # fmt: skip

    def as_json(self) -> dict[str, Any]:
        """The ``rex ls -o json`` form (docs/schemas/ls.v1.json)."""
        return {
            "name": self.name, "state": self.state, "ips": [self.address] if self.address else [],
            "hostname": self.hostname, "services": [s.as_json() for s in self.services],
            "base": self.base, "image": self.image, "host": self.host,
            "limits": self.limits.as_json(), "usage": dict(self.usage), "created": self.created,
            "health": self.health,
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
            Limits.from_json(d.get("limits")),
            {str(k): int(v) for k, v in (d.get("usage") or {}).items()},
            _opt_int(d.get("created")) or 0,
            str(d["health"]) if d.get("health") else None,
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
    host: str = ""  # the host that keeps it

    def as_json(self) -> dict[str, object]:
        return {
            "jail": self.jail, "name": self.name, "path": self.path, "size": self.size,
            "used": self.used, "attached": self.attached, "snapshots": list(self.snapshots),
            "host": self.host,
        }  # fmt: skip

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> VolumeInfo:
        size = d.get("size")
        return cls(str(d["jail"]), str(d["name"]), str(d["path"]),
                   int(size) if size is not None else None, int(d["used"]), bool(d["attached"]),
                   tuple(str(s) for s in d.get("snapshots", ())),
                   str(d.get("host") or ""))  # fmt: skip


@dataclass(frozen=True, slots=True)
class ExportInfo:
    """What ``rex export`` wrote: the jail, the host, each part and its size."""

    name: str
    host: str
    parts: tuple[tuple[str, int], ...]  # ("root" or a volume, bytes)

    @property
    def size(self) -> int:
        return sum(n for _, n in self.parts)

    def as_json(self) -> dict[str, object]:
        return {"name": self.name, "host": self.host, "size": self.size,
                "parts": [{"part": p, "size": n} for p, n in self.parts]}  # fmt: skip
