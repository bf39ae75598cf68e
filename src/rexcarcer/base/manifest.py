"""The published-base format, pure: where the four files are, what the manifest
and the metadata say, and whether a decompressed stream starts like ``zfs send``.

The manifest ``NAME.sha256`` is what ``sha256sum NAME.base NAME.zfs.bz2`` prints
(``HEX  FILE``); FreeBSD's ``sha256 -r`` (``HEX FILE``) and ``sha256``
(``SHA256 (FILE) = HEX``) lines are read too. It lists exactly those two files.

The metadata ``NAME.base`` is ``key=value`` lines (and ``#`` comment lines),
written by rex or by hand. ``name`` is the local base ``bases/<name>``,
``version`` its snapshot ``@<version>``; both are required. ``osrelease`` is the
base's ``freebsd-version -u``; the sizes are bytes of the ``zfs send`` stream and
of ``NAME.zfs.bz2``; unknown keys are kept::

    format=1
    name=FreeBSD-14.1-RELEASE
    version=14.1-RELEASE-p3
    os=FreeBSD
    osrelease=14.1-RELEASE-p3
    arch=amd64
    created=2026-01-31T12:00:00Z
    stream_size=734003200
    compressed_size=201326592
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from urllib.parse import urlsplit, urlunsplit

from rexcarcer.base import VerificationError
from rexcarcer.errors import UsageError

STREAM = ".zfs.bz2"
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

# zfs(8) send streams begin with a DRR_BEGIN record: drr_type 0, payload length,
# then drr_magic (DMU_BACKUP_MAGIC) in the sender's byte order.
ZFS_MAGIC = 0x2F5BACBAC
ZFS_HEAD = 16


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

    def signature(self, fingerprint: str) -> str:
        return f"{self.url}{SIGNATURE}{fingerprint}"


def parse_location(text: str) -> Location:
    """``https://host/dir/NAME`` (or one of its four files) → the base's location."""
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


def parse_manifest(data: bytes, loc: Location) -> Manifest:
    """The two digests; anything else in the file is refused."""
    where = loc.manifest
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError as exc:
        raise VerificationError(f"manifest {where} is not a text file") from exc
    wanted = {loc.stem + METADATA, loc.stem + STREAM}
    found: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.rstrip("\r")
        if not line.strip():
            continue
        name, digest = _manifest_line(line, where, number)
        if name not in wanted:
            raise VerificationError(
                f"manifest {where} lists another file, {name!r}",
                hint=f"a base manifest lists exactly {loc.stem}.base and {loc.stem}.zfs.bz2",
            )
        if name in found:
            raise VerificationError(f"manifest {where} lists {name} twice")
        found[name] = digest
    missing = sorted(wanted - found.keys())
    if missing:
        raise VerificationError(f"manifest {where} does not list {', '.join(missing)}")
    return Manifest(found[loc.stem + METADATA], found[loc.stem + STREAM])


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


def render_manifest(stem: str, metadata_sha256: str, stream_sha256: str) -> bytes:
    """What ``sha256sum NAME.base NAME.zfs.bz2`` prints."""
    return f"{metadata_sha256}  {stem}{METADATA}\n{stream_sha256}  {stem}{STREAM}\n".encode()


# -- the metadata ---------------------------------------------------------------


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
    extra: dict[str, str] = field(default_factory=dict)


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
    known = {k: values.pop(k) for k in _FIELDS if k in values}
    return Metadata(**known, **sizes, extra=values)  # type: ignore[arg-type]


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
    lines += [f"{k}={v}" for k, v in sorted(meta.extra.items())]
    return ("\n".join(lines) + "\n").encode()


# -- the stream -----------------------------------------------------------------


def is_zfs_stream(head: bytes) -> bool:
    """Whether the first bytes of a decompressed stream are a DRR_BEGIN record."""
    if len(head) < ZFS_HEAD:
        return False
    magic = head[8:16]
    return ZFS_MAGIC in (int.from_bytes(magic, "little"), int.from_bytes(magic, "big"))


def normalize_pin(pin: str) -> str:
    """``sha256:HEX`` (or bare HEX) → lower-case HEX."""
    hexdigest = pin.strip().lower().removeprefix("sha256:")
    if not HEX64.match(hexdigest):
        raise UsageError(
            f"bad pin {pin!r}", hint="a pin is sha256:<64 hex digits>, the manifest's SHA-256"
        )
    return hexdigest
