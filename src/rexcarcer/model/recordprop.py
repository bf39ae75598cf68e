"""A jail record as ZFS user properties on its dataset, so that the records can
be rebuilt from ZFS alone (``rex state rebuild``, docs/faults.md).

zfsprops(7), "User Properties": "Property values are limited to 8192 bytes"
(the ZAP's ``ZAP_MAXVALUELEN``, include/sys/zap.h). A record is its compact
JSON form (model/jail.py) in ``rexcarcer:record`` when it fits in ``CHUNK``
bytes; else that JSON compressed (zlib) and base64-encoded, prefixed ``z:``;
and when even that does not fit, ``rexcarcer:record`` says ``parts:N`` and the
text is cut into ``rexcarcer:record.1`` … ``record.N``. ``CHUNK`` stays below
the limit so that a zfs that counts the terminating NUL still takes it.

Reading is strict: whatever is on a dataset is input, not truth. A value that
is not one of these forms, a missing part, a bomb of a compressed value, JSON
that ``JailRecord.from_json`` refuses, or a record naming another jail or
generation than its dataset raise ``ValueError`` with the reason.
"""

from __future__ import annotations

import base64
import binascii
import json
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from rexcarcer.errors import StateError
from rexcarcer.model.jail import JailRecord, Status
from rexcarcer.names import jail_name_problem

PROP = "record"
CHUNK = 8000
MAX_PARTS = 8  # 64 KB of compressed record: far above any real one
MAX_JSON = 1 << 20  # a decompressed record larger than this is refused
ZLIB = "z:"
PARTS = "parts:"

# the property names a reader asks zfs for (without the rexcarcer: prefix)
NAMES = (PROP, *(f"{PROP}.{i}" for i in range(1, MAX_PARTS + 1)))


def encode(rec: JailRecord) -> dict[str, str]:
    """The user properties (without the ``rexcarcer:`` prefix) holding ``rec``."""
    text = json.dumps(rec.as_json(), separators=(",", ":"), sort_keys=True)
    if len(text.encode()) > CHUNK:
        text = ZLIB + base64.b64encode(zlib.compress(text.encode(), 9)).decode("ascii")
    if len(text) <= CHUNK:
        return {PROP: text}
    parts = [text[i : i + CHUNK] for i in range(0, len(text), CHUNK)]
    if len(parts) > MAX_PARTS:
        raise StateError(
            f"the record of jail {rec.name} is too large to keep on its dataset "
            f"({len(text)} bytes compressed)",
            hint="fewer or shorter ENV values and SERVICE lines make it smaller",
        )
    return {PROP: f"{PARTS}{len(parts)}", **{f"{PROP}.{i}": p for i, p in enumerate(parts, 1)}}


def decode(props: Mapping[str, str]) -> JailRecord:
    """The record in ``props`` (a dataset's ``rexcarcer:*`` properties, prefix
    stripped); ValueError saying why when there is none or it is malformed."""
    head = props.get(PROP)
    if not head:
        raise ValueError("no rexcarcer:record property")
    text = head
    if head.startswith(PARTS):
        count = head[len(PARTS) :]
        if not count.isdigit() or not 1 <= int(count) <= MAX_PARTS:
            raise ValueError(f"rexcarcer:record: bad part count {count[:20]!r}")
        missing = [i for i in range(1, int(count) + 1) if not props.get(f"{PROP}.{i}")]
        if missing:
            raise ValueError(f"rexcarcer:record.{missing[0]} is missing")
        text = "".join(props[f"{PROP}.{i}"] for i in range(1, int(count) + 1))
    if text.startswith(ZLIB):
        text = _inflate(text[len(ZLIB) :])
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise ValueError(f"rexcarcer:record is not JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ValueError("rexcarcer:record is not a JSON object")
    try:
        return JailRecord.from_json(data)
    except StateError as exc:
        raise ValueError(exc.message) from exc


def _inflate(text: str) -> str:
    try:
        packed = base64.b64decode(text.encode("ascii"), validate=True)
        inflater = zlib.decompressobj()
        raw = inflater.decompress(packed, MAX_JSON)
    except (binascii.Error, UnicodeEncodeError, zlib.error) as exc:
        raise ValueError(f"rexcarcer:record: bad compressed value: {exc}") from exc
    if inflater.unconsumed_tail or not inflater.eof:
        raise ValueError(f"rexcarcer:record: compressed value larger than {MAX_JSON} bytes "
                         "or cut short")  # fmt: skip
    try:
        return raw.decode()
    except UnicodeDecodeError as exc:
        raise ValueError(f"rexcarcer:record: not UTF-8: {exc}") from exc


def for_dataset(dataset: str, props: Mapping[str, str]) -> JailRecord:
    """The record on ``dataset`` (``jails/<name>`` or ``generations/<name>.<N>``),
    checked to be that jail's (and that generation's). A kept generation reads as
    ``rex history`` keeps it: settled (ready, no owning run)."""
    rec = decode(props)
    problem = jail_name_problem(rec.name)
    if problem is not None:
        raise ValueError(f"its record names no valid jail: {problem[:200]}")
    kind, _, rest = dataset.partition("/")
    if kind == "jails":
        if rec.name != rest:
            raise ValueError(f"its record names jail {rec.name!r}")
        return rec
    name, _, gen = rest.rpartition(".")
    if kind != "generations" or not gen.isdigit():
        raise ValueError("not a jail's dataset")
    if rec.name != name or rec.generation != int(gen):
        raise ValueError(f"its record is generation {rec.generation} of jail {rec.name!r}")
    return rec.replace(status=Status.READY, pid=None, pid_start=None, pid_ticks=None,
                       replacing=0)  # fmt: skip


@dataclass(frozen=True, slots=True)
class RebuiltJail:
    """A jail whose record ``rex state rebuild`` put back, as the jail hooks get
    it to put back what they keep in the store (engine/base.py ``rebuilt``)."""

    rec: JailRecord
    root: Path | None  # the mounted dataset jails/<name>
    running: bool
