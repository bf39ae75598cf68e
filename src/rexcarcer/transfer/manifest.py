"""What an export says: the jail's record, the streams that follow (their sizes
and SHA-256), who exported it and when. Pure: no I/O.

::

    {"format": "rexcarcer-jail", "version": 1, "host": "h1", "zone": "rex.internal",
     "created": 1714000000, "snapshot": "rex-export-20240425-001500",
     "osrelease": "14.1-RELEASE" or null,
     "jail": {the jail record, model/jail.py},
     "parts": [{"part": "root", "size": 12345, "sha256": "..."},
               {"part": "<volume>", "size": ..., "sha256": ...}, ...]}

The parts are the jail's root, then its volumes in the record's order, and
follow the header in that order, back to back. An import reads a manifest
only after its signature verified, and still checks every field as hostile
input (a trusted host may have been broken into): names, paths, sizes,
digests, the record's fields.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from rexcarcer.errors import RexError
from rexcarcer.model.jail import JailRecord
from rexcarcer.names import hostname_problem, jail_name_problem, service_problem
from rexcarcer.rexfile.running import path_problem, volume_name_ok
from rexcarcer.transfer import ArchiveRejected

FORMAT = "rexcarcer-jail"
VERSION = 1
MAX_PART = 1 << 50  # a part's size: a petabyte is a bad number, not a jail
_HEX64 = re.compile(r"[0-9a-f]{64}")
_LABEL = re.compile(r"[A-Za-z0-9._-]{1,64}")
_ENV_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


@dataclass(frozen=True, slots=True)
class Part:
    part: str  # "root", or the volume's name
    size: int
    sha256: str

    def as_json(self) -> dict[str, Any]:
        return {"part": self.part, "size": self.size, "sha256": self.sha256}


@dataclass(frozen=True, slots=True)
class Manifest:
    jail: JailRecord
    host: str  # the exporting host
    zone: str  # its cluster zone (the jail's default host name is under it)
    created: int
    snapshot: str  # the snapshot the streams were sent from
    osrelease: str | None
    parts: tuple[Part, ...]

    def as_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT, "version": VERSION, "host": self.host, "zone": self.zone,
            "created": self.created, "snapshot": self.snapshot, "osrelease": self.osrelease,
            "jail": self.jail.as_json(), "parts": [p.as_json() for p in self.parts],
        }  # fmt: skip

    def encode(self) -> bytes:
        """The bytes that are signed (sorted keys: one form for one manifest)."""
        return json.dumps(self.as_json(), sort_keys=True, separators=(",", ":")).encode()

    @property
    def total(self) -> int:
        return sum(p.size for p in self.parts)


def part_names(rec: JailRecord) -> list[str]:
    return ["root", *(v.name for v in rec.volumes)]


def _bad(what: str) -> ArchiveRejected:
    return ArchiveRejected(
        f"the export's manifest is malformed: {what}",
        hint="the file is not an export rex wrote, or it was altered",
    )


def parse(data: bytes) -> Manifest:
    """The manifest in ``data``, every field checked."""
    try:
        obj = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise _bad(f"not JSON ({exc})") from exc
    if not isinstance(obj, dict):
        raise _bad("not a JSON object")
    if obj.get("format") != FORMAT:
        raise _bad(f"format {obj.get('format')!r}, not {FORMAT!r}")
    if obj.get("version") != VERSION:
        raise ArchiveRejected(
            f"the export has format version {obj.get('version')!r}; this rex reads {VERSION}",
            hint="import it with the rex release that exported it, or a newer one",
        )
    host, zone = _text(obj, "host", 253), _text(obj, "zone", 253)
    if hostname_problem(host) or hostname_problem(zone):
        raise _bad(f"host {host!r} or zone {zone!r} is not a DNS name")
    created = obj.get("created")
    snapshot = _text(obj, "snapshot", 64)
    if type(created) is not int or created < 0 or not _LABEL.fullmatch(snapshot):
        raise _bad("bad creation time or snapshot name")
    osrelease = obj.get("osrelease")
    if osrelease is not None and not (isinstance(osrelease, str) and _LABEL.fullmatch(osrelease)):
        raise _bad(f"bad osrelease {str(osrelease)[:80]!r}")
    jail = _record(obj.get("jail"))
    parts = _parts(obj.get("parts"), part_names(jail))
    return Manifest(jail, host, zone, created, snapshot, osrelease, parts)


def _text(obj: Mapping[str, Any], key: str, limit: int) -> str:
    value = obj.get(key)
    if not isinstance(value, str) or not value or len(value) > limit or not value.isprintable():
        raise _bad(f"{key!r} is missing or not a short text")
    return value


def _record(data: object) -> JailRecord:
    if not isinstance(data, dict):
        raise _bad("no jail record")
    try:
        rec = JailRecord.from_json(data)
    except RexError as exc:
        raise _bad(exc.message) from exc
    problem = jail_name_problem(rec.name)
    if problem is None and rec.hostname:
        problem = hostname_problem(rec.hostname)
    for svc in rec.services:
        problem = problem or service_problem(svc.name)
    for key, value in rec.env:
        if not _ENV_KEY.fullmatch(key) or "\0" in value:
            problem = problem or f"bad ENV {key[:40]!r}"
    seen: set[str] = set()
    for v in rec.volumes:
        if not volume_name_ok(v.name) or v.name in seen:
            problem = problem or f"bad or repeated volume name {v.name[:40]!r}"
        seen.add(v.name)
        path = path_problem(v.path)
        problem = problem or (path[0] if path else None)
        if v.size is not None and v.size < 0:
            problem = problem or f"volume {v.name}: a negative size"
    if problem is not None:
        raise _bad(f"jail {rec.name[:63]!r}: {problem}")
    return rec


def _parts(data: object, wanted: list[str]) -> tuple[Part, ...]:
    if not isinstance(data, list) or len(data) != len(wanted):
        raise _bad(f"the parts must be exactly {', '.join(wanted)}")
    out = []
    for item, name in zip(data, wanted, strict=True):
        if not isinstance(item, dict) or set(item) != {"part", "size", "sha256"}:
            raise _bad("a part is not {part, size, sha256}")
        size, digest = item["size"], item["sha256"]
        if item["part"] != name:
            raise _bad(f"part {str(item['part'])[:40]!r} where {name!r} belongs")
        if type(size) is not int or not 0 < size <= MAX_PART:
            raise _bad(f"part {name}: bad size {size!r}")
        if not isinstance(digest, str) or not _HEX64.fullmatch(digest):
            raise _bad(f"part {name}: bad SHA-256")
        out.append(Part(name, size, digest))
    return tuple(out)
