"""The published-base format, pure: where the files are, what the manifest and
the metadata say, and what the header of a decompressed stream says.

The manifest ``NAME.sha256`` is what ``sha256sum NAME.base NAME.zfs.bz2
[NAME.from-V.zfs.bz2 ...]`` prints (``HEX  FILE``); FreeBSD's ``sha256 -r``
(``HEX FILE``) and ``sha256`` (``SHA256 (FILE) = HEX``) lines are read too. It
lists the metadata, the full stream and each increment ``NAME.from-V.zfs.bz2``
(``zfs send -i @V``), and nothing else.

The metadata ``NAME.base`` is ``key=value`` lines (and ``#`` comment lines),
written by rex or by hand. ``name`` is the local base ``bases/<name>``,
``version`` its snapshot ``@<version>``; both are required. ``osrelease`` is the
base's ``freebsd-version -u``; the sizes are bytes of the ``zfs send`` stream and
of ``NAME.zfs.bz2``; ``guid`` is the snapshot's ZFS guid; ``incremental_from``
lists the increments, each as ``VERSION@GUID`` of the snapshot it applies to
(required for each increment the manifest lists); unknown keys are kept::

    format=1
    name=FreeBSD-14.1-RELEASE
    version=14.1-RELEASE-p4
    os=FreeBSD
    osrelease=14.1-RELEASE-p4
    arch=amd64
    created=2026-03-31T12:00:00Z
    stream_size=734003200
    compressed_size=201326592
    guid=11198407343423955801
    incremental_from=14.1-RELEASE-p3@1243098483713276022
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import urlsplit, urlunsplit

from rexcarcer.base import VerificationError
from rexcarcer.errors import UsageError

STREAM = ".zfs.bz2"
INCREMENT = ".from-"  # NAME.from-<version>.zfs.bz2
METADATA = ".base"
MANIFEST = ".sha256"
SIGNATURE = ".sha256sig."
SCHEMES = ("https", "http", "file")
MAX_SMALL_FILE = 64 * 1024  # manifest, metadata, signature: never more

# A name that can be a ZFS dataset component and a file name: no '/', '@', '..'.
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
HEX64 = re.compile(r"^[0-9a-f]{64}$")
_SIG_SUFFIX = re.compile(r"\.sha256sig\.[0-9a-fA-F]{64}$")
_GNU_LINE = re.compile(r"^([0-9a-fA-F]{64}) [ *]?(.+)$")
_BSD_LINE = re.compile(r"^SHA256 \((.+)\) = ([0-9a-fA-F]{64})$")
_KEY = re.compile(r"^[a-z][a-z0-9_]{0,63}$")

# zfs(8) send streams begin with a DRR_BEGIN record (include/sys/zfs_ioctl.h,
# struct dmu_replay_record): drr_type 0 and drr_payloadlen (two uint32), then
# struct drr_begin: drr_magic (DMU_BACKUP_MAGIC), drr_versioninfo,
# drr_creation_time (uint64 each), drr_type, drr_flags (uint32 each), drr_toguid,
# drr_fromguid (uint64 each), drr_toname: all in the sender's byte order. So the
# magic is at offset 8, the guid of the snapshot sent at 40 and the guid of the
# snapshot an incremental stream applies to at 48 (0 in a full stream). Checked
# against zfs-fuse's and OpenZFS's streams (tests/data/base/).
ZFS_MAGIC = 0x2F5BACBAC
ZFS_HEAD = 56
_TOGUID, _FROMGUID = 40, 48
MAX_GUID = (1 << 64) - 1


@dataclass(frozen=True, slots=True)
class Location:
    """Where a published base lives: ``url`` is ``U`` (no suffix)."""

    url: str

    @property
    def stem(self) -> str:
        return self.url.rsplit("/", 1)[1]

    @property
    def directory(self) -> str:
        return self.url.rsplit("/", 1)[0] + "/"

    @property
    def scheme(self) -> str:
        return self.url.split(":", 1)[0]

    @property
    def manifest(self) -> str:
        return self.url + MANIFEST

    @property
    def metadata(self) -> str:
        return self.url + METADATA

    @property
    def stream(self) -> str:
        return self.url + STREAM

    def increment(self, version: str) -> str:
        """The incremental stream from ``version`` (``zfs send -i @version``)."""
        return f"{self.url}{INCREMENT}{version}{STREAM}"

    def signature(self, fingerprint: str) -> str:
        return f"{self.url}{SIGNATURE}{fingerprint}"


def parse_location(text: str) -> Location:
    """``https://host/dir/NAME`` (or its full stream, metadata, manifest or a
    signature) → the base's location."""
    parts = urlsplit(text.strip())
    scheme = parts.scheme.lower()
    if scheme not in SCHEMES:
        raise UsageError(
            f"unsupported URL {text!r}", hint="a base URL starts with https://, http:// or file://"
        )
    if parts.query or parts.fragment:
        raise UsageError(f"base URL {text!r} has a query or fragment", hint="remove '?…' or '#…'")
    if scheme == "file" and parts.netloc not in ("", "localhost"):
        raise UsageError(f"file URL {text!r} names a host", hint="write file:///absolute/path")
    if scheme != "file" and not parts.netloc:
        raise UsageError(f"URL {text!r} has no host")
    path = _SIG_SUFFIX.sub("", parts.path)
    for suffix in (STREAM, MANIFEST, METADATA):
        if path.endswith(suffix):
            path = path[: -len(suffix)]
            break
    stem = path.rsplit("/", 1)[-1]
    if not path.startswith("/") or stem in ("", ".", ".."):
        raise UsageError(
            f"URL {text!r} does not name a base",
            hint="give the URL without suffix: https://host/dir/NAME for NAME.sha256 and the rest",
        )
    netloc = "" if scheme == "file" else parts.netloc.lower()
    return Location(urlunsplit((scheme, netloc, path, "", "")))


# -- the manifest ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Manifest:
    metadata_sha256: str
    stream_sha256: str
    increments: dict[str, str] = field(default_factory=dict)  # from-version -> sha256


def increment_file(stem: str, version: str) -> str:
    return f"{stem}{INCREMENT}{version}{STREAM}"


def parse_manifest(data: bytes, loc: Location) -> Manifest:
    """The digests of the metadata, the full stream and the increments; any other
    file in the list is refused."""
    where = loc.manifest
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError as exc:
        raise VerificationError(f"manifest {where} is not a text file") from exc
    wanted = {loc.stem + METADATA, loc.stem + STREAM}
    found: dict[str, str] = {}
    increments: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.rstrip("\r")
        if not line.strip():
            continue
        name, digest = _manifest_line(line, where, number)
        if name in found or name in increments.values():
            raise VerificationError(f"manifest {where} lists {name} twice")
        if name in wanted:
            found[name] = digest
            continue
        version = _increment_version(name, loc.stem)
        if version is None:
            raise VerificationError(
                f"manifest {where} lists another file, {name!r}",
                hint=f"a base manifest lists {loc.stem}.base, {loc.stem}.zfs.bz2 and "
                f"increments {loc.stem}.from-VERSION.zfs.bz2, nothing else",
            )
        if version in increments:
            raise VerificationError(f"manifest {where} lists {name} twice")
        increments[version] = digest
    missing = sorted(wanted - found.keys())
    if missing:
        raise VerificationError(f"manifest {where} does not list {', '.join(missing)}")
    return Manifest(found[loc.stem + METADATA], found[loc.stem + STREAM], increments)


def _increment_version(name: str, stem: str) -> str | None:
    """``V`` for ``STEM.from-V.zfs.bz2`` with a valid version ``V``, else None."""
    head, tail = f"{stem}{INCREMENT}", STREAM
    if not (name.startswith(head) and name.endswith(tail)):
        return None
    version = name[len(head) : -len(tail)]
    return version if NAME.match(version) else None


def _manifest_line(line: str, where: str, number: int) -> tuple[str, str]:
    gnu, bsd = _GNU_LINE.match(line), _BSD_LINE.match(line)
    if gnu:
        return gnu.group(2), gnu.group(1).lower()
    if bsd:
        return bsd.group(1), bsd.group(2).lower()
    raise VerificationError(
        f"manifest {where}, line {number}: not a SHA-256 line: {line[:80]!r}",
        hint="each line is `HEX  FILE`, as sha256sum prints it",
    )


def render_manifest(
    stem: str, metadata_sha256: str, stream_sha256: str, increments: dict[str, str] | None = None
) -> bytes:
    """What ``sha256sum NAME.base NAME.zfs.bz2 NAME.from-V.zfs.bz2 ...`` prints."""
    lines = [f"{metadata_sha256}  {stem}{METADATA}", f"{stream_sha256}  {stem}{STREAM}"]
    lines += [f"{d}  {increment_file(stem, v)}" for v, d in (increments or {}).items()]
    return ("\n".join(lines) + "\n").encode()


# -- the metadata ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Increment:
    """``NAME.from-<version>.zfs.bz2`` applies to the snapshot ``@<version>`` whose
    ZFS guid is ``guid`` (a host checks it has exactly that snapshot)."""

    version: str
    guid: int


@dataclass(frozen=True, slots=True)
class Metadata:
    name: str
    version: str
    os: str = ""
    osrelease: str = ""
    arch: str = ""
    created: str = ""
    stream_size: int | None = None
    compressed_size: int | None = None
    guid: int | None = None  # of the snapshot @version
    incremental_from: tuple[Increment, ...] = ()
    extra: dict[str, str] = field(default_factory=dict)

    def increment(self, version: str) -> Increment | None:
        return next((i for i in self.incremental_from if i.version == version), None)


_FIELDS = ("name", "version", "os", "osrelease", "arch", "created")
_SIZES = ("stream_size", "compressed_size")


def parse_metadata(data: bytes, where: str = "metadata") -> Metadata:
    values = _key_values(data, where)
    fmt = values.pop("format", "1")
    if fmt != "1":
        raise VerificationError(
            f"{where}: unknown format {fmt!r}", hint="this rex reads format=1; upgrade rex"
        )
    for key in ("name", "version"):
        if key not in values:
            raise VerificationError(f"{where} has no {key}=")
        if not NAME.match(values[key]):
            raise VerificationError(
                f"{where}: {key} {values[key]!r} is not a valid base {key}: it would escape "
                "the dataset layout bases/<name>@<version>",
                hint="names use letters, digits, '.', '_' and '-', starting with a letter or digit",
            )
    sizes = {k: _size(values.pop(k), k, where) for k in _SIZES if k in values}
    guid = _guid(values.pop("guid"), "guid", where) if "guid" in values else None
    increments = _increments(values.pop("incremental_from", ""), values["version"], where)
    if increments and guid is None:
        raise VerificationError(
            f"{where} lists increments but no guid=",
            hint="guid= is the ZFS guid of the snapshot @version (zfs get -Hp guid)",
        )
    known = {k: values.pop(k) for k in _FIELDS if k in values}
    return Metadata(**known, **sizes, guid=guid, incremental_from=increments,  # type: ignore[arg-type]
                    extra=values)  # fmt: skip


def _guid(text: str, key: str, where: str) -> int:
    if not text.isdigit() or not 0 < int(text) <= MAX_GUID:
        raise VerificationError(
            f"{where}: {key} must be a ZFS guid (a decimal 64-bit number), got {text!r}"
        )
    return int(text)


def _increments(text: str, version: str, where: str) -> tuple[Increment, ...]:
    """``incremental_from=V1@GUID1 V2@GUID2``: the snapshots the increments apply to."""
    out: list[Increment] = []
    for item in text.split():
        from_version, at, guid = item.partition("@")
        if not at or not NAME.match(from_version):
            raise VerificationError(
                f"{where}: incremental_from entry {item!r} is not VERSION@GUID",
                hint="each increment is named by the version it applies to and that "
                "snapshot's ZFS guid",
            )
        if from_version == version or any(i.version == from_version for i in out):
            raise VerificationError(f"{where}: incremental_from lists {from_version} twice "
                                    "or names the version itself")  # fmt: skip
        out.append(Increment(from_version, _guid(guid, "incremental_from", where)))
    return tuple(out)


def _key_values(data: bytes, where: str) -> dict[str, str]:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise VerificationError(f"{where} is not UTF-8 text") from exc
    out: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, eq, value = line.partition("=")
        key, value = key.strip(), value.strip()
        if not eq or not _KEY.match(key) or any(ord(c) < 32 for c in value):
            raise VerificationError(f"{where}, line {number}: expected key=value, got {line!r}")
        if key in out:
            raise VerificationError(f"{where}, line {number}: {key} given twice")
        out[key] = value
    return out


def _size(text: str, key: str, where: str) -> int:
    if not text.isdigit():
        raise VerificationError(f"{where}: {key} must be a number of bytes, got {text!r}")
    return int(text)


def render_metadata(meta: Metadata) -> bytes:
    lines = ["# rexcarcer base metadata (docs/bases.md)", "format=1"]
    for key in _FIELDS:
        value = getattr(meta, key)
        if value:
            lines.append(f"{key}={value}")
    for key in _SIZES:
        size = getattr(meta, key)
        if size is not None:
            lines.append(f"{key}={size}")
    if meta.guid is not None:
        lines.append(f"guid={meta.guid}")
    if meta.incremental_from:
        entries = " ".join(f"{i.version}@{i.guid}" for i in meta.incremental_from)
        lines.append(f"incremental_from={entries}")
    lines += [f"{k}={v}" for k, v in sorted(meta.extra.items())]
    return ("\n".join(lines) + "\n").encode()


# -- the stream -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StreamHead:
    toguid: int  # the snapshot the stream makes
    fromguid: int  # the snapshot an incremental stream applies to; 0 for a full stream


def parse_stream_head(head: bytes) -> StreamHead | None:
    """The DRR_BEGIN record at the start of a decompressed stream, or None."""
    if len(head) < ZFS_HEAD:
        return None
    orders: tuple[Literal["little"], Literal["big"]] = ("little", "big")
    for order in orders:
        if int.from_bytes(head[8:16], order) == ZFS_MAGIC:
            return StreamHead(
                int.from_bytes(head[_TOGUID : _TOGUID + 8], order),
                int.from_bytes(head[_FROMGUID : _FROMGUID + 8], order),
            )
    return None


def is_zfs_stream(head: bytes) -> bool:
    """Whether the first bytes of a decompressed stream are a DRR_BEGIN record."""
    return parse_stream_head(head) is not None


def normalize_pin(pin: str) -> str:
    """``sha256:HEX`` (or bare HEX) → lower-case HEX."""
    hexdigest = pin.strip().lower().removeprefix("sha256:")
    if not HEX64.match(hexdigest):
        raise UsageError(
            f"bad pin {pin!r}", hint="a pin is sha256:<64 hex digits>, the manifest's SHA-256"
        )
    return hexdigest
