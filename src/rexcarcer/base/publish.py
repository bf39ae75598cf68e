"""``rex base publish`` and ``rex base sign``: write the four files of a base.

The stream is ``zfs send`` of the base snapshot, compressed in blocks on every
core (concatenated bzip2 streams, as pbzip2 and lbzip2 write them; bzcat and
rex read them) and hashed on the way to disk. Files appear in an order that a
concurrent reader can never take for a valid base: stream, metadata, then the
manifest, then the signatures.
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
    Metadata,
    parse_location,
    parse_manifest,
    render_manifest,
    render_metadata,
)
from rexcarcer.base.sign import CertInfo, PrivateKey
from rexcarcer.errors import Conflict, StateError, UsageError
from rexcarcer.fsutil import atomic_file, atomic_write
from rexcarcer.host import Host

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
    host: Host, name: str, directory: Path, signers: Sequence[Signer], *, force: bool = False
) -> Published:
    info = find_base(host, name)
    manifest_path = directory / f"{name}{MANIFEST}"
    if manifest_path.exists() and not force:
        raise Conflict(f"{manifest_path} already exists", hint="add --force to replace it")
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StateError(f"cannot create {directory}: {exc.strerror or exc}") from exc
    host.progress.step(f"Writing {directory / name}{STREAM} from {info.snapshot}")
    with atomic_file(directory / f"{name}{STREAM}", mode=0o644) as tmp:
        stream_sha, compressed, raw = send_compressed(host, info.snapshot, tmp)
    meta = render_metadata(Metadata(
        name=name, version=info.version, os="FreeBSD" if info.props.get("osrelease") else "",
        osrelease=info.props.get("osrelease", ""),
        arch=_ARCH.get(platform.machine(), platform.machine()),
        created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        stream_size=raw, compressed_size=compressed,
    ))  # fmt: skip
    _write(directory / f"{name}{METADATA}", meta)
    for stale in glob.glob(glob.escape(str(directory / f"{name}{SIGNATURE}")) + "*"):
        os.unlink(stale)  # signatures of what was here before
    manifest = render_manifest(name, hashlib.sha256(meta).hexdigest(), stream_sha)
    _write(manifest_path, manifest)
    files = [directory / f"{name}{s}" for s in (STREAM, METADATA, MANIFEST)]
    files += [write_signature(manifest_path, manifest, key, cert) for key, cert in signers]
    return Published(
        tuple(files),
        hashlib.sha256(manifest).hexdigest(),
        tuple(signing.describe(c) for _, c in signers),
    )


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
    for suffix, digest in ((METADATA, listed.metadata_sha256), (STREAM, listed.stream_sha256)):
        if _file_sha256(Path(f"{base}{suffix}")) != digest:
            raise VerificationError(f"{base}{suffix} does not match {manifest_path}")
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


def send_compressed(host: Host, snapshot: str, out: IO[bytes]) -> tuple[str, int, int]:
    """``zfs send snapshot | bzip2 > out``; returns (sha256, compressed, raw) sizes."""
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
            host.storage.send(snapshot, writer)
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
