"""``rex base publish`` and ``rex base sign``: write the files of a base.

The stream is ``zfs send`` of the base's current version, compressed in blocks
on every core (concatenated bzip2 streams, as pbzip2 and lbzip2 write them;
bzcat and rex read them) and hashed on the way to disk. ``--incremental-from V``
adds ``NAME.from-V.zfs.bz2``, ``zfs send -i @V`` of the same snapshot, listed
in the same manifest (one signature and one pin cover every stream) and
described in the metadata (``incremental_from=V@GUID``). Files appear in an
order that a concurrent reader can never take for a valid base: streams,
metadata, then the manifest, then the signatures; increments of an earlier
publication go last.

Publishing a newer version of a base over its earlier publication is the
normal way to update it and needs no ``--force``; anything else already there
does.
"""

from __future__ import annotations

import bz2
import glob
import hashlib
import os
import platform
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from cryptography import x509

from rexcarcer.base import VerificationError
from rexcarcer.base import sign as signing
from rexcarcer.base.local import find_base
from rexcarcer.base.manifest import (
    MANIFEST,
    METADATA,
    SIGNATURE,
    STREAM,
    Increment,
    Location,
    Metadata,
    increment_file,
    parse_location,
    parse_manifest,
    parse_metadata,
    render_manifest,
    render_metadata,
)
from rexcarcer.base.sign import CertInfo, PrivateKey
from rexcarcer.errors import Conflict, NotFound, StateError, UsageError
from rexcarcer.fsutil import atomic_file, atomic_write
from rexcarcer.host import Host
from rexcarcer.model.base import BaseInfo, BaseVersion

BLOCK = 8 << 20  # bytes per independently compressed bzip2 stream
_ARCH = {"x86_64": "amd64", "aarch64": "arm64"}
Signer = tuple[PrivateKey, x509.Certificate]


@dataclass(frozen=True, slots=True)
class Published:
    files: tuple[Path, ...]
    digest: str  # SHA-256 of the manifest: what `BASE URL sha256:…` pins
    signers: tuple[CertInfo, ...]


def load_signers(pairs: Sequence[tuple[Path, Path]]) -> list[Signer]:
    """Keys and their certificates, checked before any long work starts."""
    if not pairs:
        raise UsageError("a published base needs a signer", hint="give --key KEY --cert CERT")
    out = []
    when = signing.now()
    for key_path, cert_path in pairs:
        cert = signing.load_certificate(signing.read_file(cert_path, "certificate"), str(cert_path))
        signing.check_validity(signing.describe(cert), when)
        key = signing.load_private_key(signing.read_file(key_path, "key"), str(key_path))
        signing.check_pair(key, cert, str(key_path), str(cert_path))
        out.append((key, cert))
    return out


def publish_base(
    host: Host, name: str, directory: Path, signers: Sequence[Signer], *, force: bool = False,
    incremental_from: Sequence[str] = (),
) -> Published:  # fmt: skip
    info = find_base(host, name)
    sources = increment_sources(info, incremental_from)
    manifest_path = directory / f"{name}{MANIFEST}"
    stale = _earlier_publication(info, directory, force)
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StateError(f"cannot create {directory}: {exc.strerror or exc}") from exc
    host.progress.step(f"Writing {directory / name}{STREAM} from {info.snapshot}")
    with atomic_file(directory / f"{name}{STREAM}", mode=0o644) as tmp:
        stream_sha, compressed, raw = send_compressed(host, info.snapshot, tmp)
    digests: dict[str, str] = {}
    for src in sources:
        path = directory / increment_file(name, src.version)
        host.progress.step(f"Writing {path}: {info.snapshot} since {src.snapshot}")
        with atomic_file(path, mode=0o644) as tmp:
            digests[src.version] = send_compressed(host, info.snapshot, tmp, since=src.snapshot)[0]
    current = info.at(info.version)
    meta = render_metadata(Metadata(
        name=name, version=info.version, os="FreeBSD" if info.props.get("osrelease") else "",
        osrelease=info.props.get("osrelease", ""),
        arch=_ARCH.get(platform.machine(), platform.machine()),
        created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        stream_size=raw, compressed_size=compressed,
        guid=current.guid if current else None,
        incremental_from=tuple(Increment(s.version, s.guid) for s in sources),
    ))  # fmt: skip
    _write(directory / f"{name}{METADATA}", meta)
    for old in glob.glob(glob.escape(str(directory / f"{name}{SIGNATURE}")) + "*"):
        os.unlink(old)  # signatures of what was here before
    manifest = render_manifest(name, hashlib.sha256(meta).hexdigest(), stream_sha, digests)
    _write(manifest_path, manifest)
    files = [directory / f"{name}{s}" for s in (STREAM, METADATA, MANIFEST)]
    files[1:1] = [directory / increment_file(name, v) for v in digests]
    files += [write_signature(manifest_path, manifest, key, cert) for key, cert in signers]
    for version in sorted(stale - digests.keys()):  # increments of the earlier publication
        (directory / increment_file(name, version)).unlink(missing_ok=True)
    return Published(
        tuple(files),
        hashlib.sha256(manifest).hexdigest(),
        tuple(signing.describe(c) for _, c in signers),
    )


def increment_sources(info: BaseInfo, wanted: Sequence[str]) -> list[BaseVersion]:
    """The older versions the increments start from: snapshots of the dataset that
    holds the current version, made before it (``zfs send -i`` needs both)."""
    out: list[BaseVersion] = []
    order = [v.version for v in info.versions]
    dataset = info.snapshot.partition("@")[0]
    for version in dict.fromkeys(wanted):
        src = info.at(version)
        if src is None:
            raise NotFound(
                f"base {info.name!r} has no version {version!r} to publish an increment from",
                hint=f"its versions: {', '.join(order)}",
            )
        if version == info.version or order.index(version) > order.index(info.version):
            raise UsageError(
                f"{info.name}@{version} is not older than the version published, {info.version}"
            )
        if src.snapshot.partition("@")[0] != dataset:
            raise UsageError(
                f"{src.snapshot} and {info.snapshot} are not snapshots of one dataset: "
                "there is no increment between them",
                hint="publish the full stream only",
            )
        out.append(src)
    return out


def _earlier_publication(info: BaseInfo, directory: Path, force: bool) -> set[str]:
    """The increments a publication already in ``directory`` lists; without
    ``force``, only an older version of this base may be there."""
    stem = directory / info.name
    try:
        manifest = Path(f"{stem}{MANIFEST}").read_bytes()
    except FileNotFoundError:
        return set()
    except OSError as exc:
        raise StateError(f"cannot read {stem}{MANIFEST}: {exc.strerror or exc}") from exc
    loc = Location(f"file://{stem.absolute()}")
    try:
        listed = parse_manifest(manifest, loc)
        meta = parse_metadata(Path(f"{stem}{METADATA}").read_bytes(), loc.metadata)
    except (VerificationError, OSError) as exc:
        if force:
            return set()
        raise Conflict(f"{stem}{MANIFEST} already exists ({exc})",
                       hint="add --force to replace it") from exc  # fmt: skip
    older = meta.name == info.name and meta.version != info.version and info.at(meta.version)
    if not (older or force):
        raise Conflict(
            f"{stem}{MANIFEST} already exists ({meta.name}@{meta.version})",
            hint="add --force to replace it",
        )
    return set(listed.increments)


def write_signature(manifest_path: Path, manifest: bytes, key: PrivateKey,
                    cert: x509.Certificate) -> Path:  # fmt: skip
    base = str(manifest_path)[: -len(MANIFEST)]
    path = Path(f"{base}{SIGNATURE}{signing.fingerprint(cert)}")
    _write(path, signing.sign(manifest, key))
    return path


def sign_published(path: str, signers: Sequence[Signer]) -> tuple[Path, ...]:
    """``rex base sign``: add signatures to a base published in a local directory,
    after checking that its manifest matches the files beside it."""
    loc = parse_location(path if "://" in path else f"file://{Path(path).absolute()}")
    if loc.scheme != "file":
        raise UsageError("rex base sign works on local files", hint="give DIR/NAME")
    base = Path(loc.url.removeprefix("file://"))
    manifest_path = Path(f"{base}{MANIFEST}")
    manifest = signing.read_file(manifest_path, "manifest")
    listed = parse_manifest(manifest, loc)
    files = {f"{base}{METADATA}": listed.metadata_sha256, f"{base}{STREAM}": listed.stream_sha256}
    files |= {str(base.parent / increment_file(base.name, v)): d
              for v, d in listed.increments.items()}  # fmt: skip
    for file, digest in files.items():
        if _file_sha256(Path(file)) != digest:
            raise VerificationError(f"{file} does not match {manifest_path}")
    return tuple(write_signature(manifest_path, manifest, key, cert) for key, cert in signers)


def _file_sha256(path: Path) -> str:
    hasher = hashlib.sha256()
    try:
        with path.open("rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                hasher.update(chunk)
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror or exc}") from exc
    return hasher.hexdigest()


def _write(path: Path, data: bytes) -> None:
    try:
        atomic_write(path, data, mode=0o644)
    except OSError as exc:
        raise StateError(f"cannot write {path}: {exc.strerror or exc}") from exc


# -- zfs send | bzip2 -------------------------------------------------------------------


def send_compressed(
    host: Host, snapshot: str, out: IO[bytes], *, since: str | None = None
) -> tuple[str, int, int]:
    """``zfs send [-i since] snapshot | bzip2 > out``; returns (sha256, compressed,
    raw) sizes."""
    r, w = os.pipe()
    result: list[tuple[str, int, int]] = []
    errors: list[BaseException] = []

    def pump() -> None:
        try:
            with os.fdopen(r, "rb") as reader:
                result.append(compress_stream(reader.read, out.write))
        except BaseException as exc:  # handed to the calling thread below
            errors.append(exc)

    thread = threading.Thread(target=pump, name="rex-bzip2")
    thread.start()
    try:
        with os.fdopen(w, "wb") as writer:
            host.storage.send(snapshot, writer, since=since)
    finally:
        thread.join()  # the pump closed its end on error, so send could not block
    if errors:
        raise errors[0]
    return result[0]


def compress_stream(
    read: Callable[[int], bytes], write: Callable[[bytes], object], workers: int | None = None
) -> tuple[str, int, int]:
    """bzip2 in BLOCK-sized streams on ``workers`` threads (bz2 releases the GIL)."""
    workers = workers or os.cpu_count() or 1
    hasher = hashlib.sha256()
    raw = compressed = 0
    pending: deque[Future[bytes]] = deque()

    def drain(keep: int) -> None:
        nonlocal compressed
        while len(pending) > keep:
            data = pending.popleft().result()
            write(data)
            hasher.update(data)
            compressed += len(data)

    with ThreadPoolExecutor(workers, thread_name_prefix="rex-bz2") as pool:
        while block := _read_full(read, BLOCK):
            raw += len(block)
            pending.append(pool.submit(bz2.compress, block, 9))
            drain(2 * workers)
        drain(0)
    return hasher.hexdigest(), compressed, raw


def _read_full(read: Callable[[int], bytes], size: int) -> bytes:
    parts, left = [], size
    while left:
        chunk = read(left)
        if not chunk:
            break
        parts.append(chunk)
        left -= len(chunk)
    return b"".join(parts)
