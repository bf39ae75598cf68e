"""Signers and published bases for the base tests (unit and integration).

Keys and certificates are made with the real ``openssl`` command where it can
(RSA 2048 and ECDSA P-256, as a publisher without rex would), with
``cryptography`` where openssl 3.0 cannot (certificates valid in the past or
the future).
"""

from __future__ import annotations

import bz2
import datetime as dt
import hashlib
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from rexcarcer.base.manifest import (
    ZFS_MAGIC,
    Increment,
    Metadata,
    render_manifest,
    render_metadata,
)
from rexcarcer.errors import StorageError
from rexcarcer.storage.fake import FakeStorage


@dataclass(frozen=True)
class Signer:
    key: Path
    cert: Path

    @property
    def fingerprint(self) -> str:
        der = x509.load_pem_x509_certificate(self.cert.read_bytes()).public_bytes(
            serialization.Encoding.DER
        )
        return hashlib.sha256(der).hexdigest()

    def pubkey(self) -> Path:
        out = self.cert.with_suffix(".pub")
        openssl("x509", "-in", self.cert, "-pubkey", "-noout", "-out", out)
        return out


def openssl(*args: str | Path, input: bytes | None = None) -> bytes:
    done = subprocess.run(
        ["openssl", *map(str, args)], input=input, capture_output=True, check=False
    )
    if done.returncode != 0:
        raise AssertionError(f"openssl {args} failed: {done.stderr.decode()}")
    return done.stdout


def openssl_signer(directory: Path, name: str, kind: str = "rsa") -> Signer:
    """A self-signed signer made with stock openssl: kind rsa (2048) or ec (P-256)."""
    directory.mkdir(parents=True, exist_ok=True)
    key, cert = directory / f"{name}.key", directory / f"{name}.crt"
    newkey = ["-newkey", "rsa:2048"] if kind == "rsa" else [
        "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
    ]  # fmt: skip
    openssl("req", "-x509", *newkey, "-nodes", "-keyout", key, "-out", cert,
            "-days", "30", "-subj", f"/CN={name}")  # fmt: skip
    return Signer(key, cert)


def dated_signer(directory: Path, name: str, *, start_days: int, end_days: int) -> Signer:
    """An EC P-256 signer valid from now+start_days to now+end_days (may be past)."""
    directory.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now + dt.timedelta(days=start_days))
        .not_valid_after(now + dt.timedelta(days=end_days))
        .sign(key, hashes.SHA256())
    )
    key_path, cert_path = directory / f"{name}.key", directory / f"{name}.crt"
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return Signer(key_path, cert_path)


def fake_zfs_stream(size: int = 4096, *, toguid: int = 0x5EED, fromguid: int = 0) -> bytes:
    """Bytes that begin like a ``zfs send`` stream (DRR_BEGIN, little-endian) of
    the snapshot ``toguid``, incremental from ``fromguid`` unless that is 0."""
    head = bytes(8) + ZFS_MAGIC.to_bytes(8, "little") + bytes(24)
    head += toguid.to_bytes(8, "little") + fromguid.to_bytes(8, "little")
    return head + bytes(range(256)) * (size // 256)


class ReceivingStorage(FakeStorage):
    """Receives any stream that starts like zfs send, as zfs(8) would: a full one
    as a new dataset with the snapshot ``@s``, an incremental one as a new snapshot
    ``@new`` of the existing dataset, whose most recent snapshot must be the
    stream's source; the snapshot gets the stream's guid."""

    fail: str | None = None  # every receive fails with this
    fail_incremental: str | None = None  # incremental receives fail with this

    def __init__(self, scratch: Path) -> None:
        super().__init__(scratch)
        self.received: list[bytes] = []  # every stream zfs receive was given

    def receive(self, name: str, stream: IO[bytes]) -> None:
        data = stream.read()
        self.received.append(data)
        if self.fail:
            raise StorageError(self.fail)
        toguid, fromguid = stream_guids(data)
        if fromguid:
            if self.fail_incremental:
                raise StorageError(self.fail_incremental)
            own = [s for s in self.snapshot_details(name) if s.name.partition("@")[0] == name]
            if not own or own[-1].guid != fromguid:
                raise StorageError(f"cannot receive incremental stream: most recent snapshot "
                                   f"of {name} does not match incremental source")  # fmt: skip
            snap = f"{name}@new"
        else:
            self.create(name)
            snap = f"{name}@s"
        (self.mountpoint(name) / "stream").write_bytes(data)
        self.snapshot(snap)
        self.snap_meta[snap].guid = toguid


def stream_guids(data: bytes) -> tuple[int, int]:
    """(toguid, fromguid) of a (decompressed) stream made by :func:`fake_zfs_stream`."""
    return int.from_bytes(data[40:48], "little"), int.from_bytes(data[48:56], "little")


def write_published(
    directory: Path,
    stem: str,
    stream: bytes,
    *,
    signers: tuple[Signer, ...] = (),
    name: str | None = None,
    version: str = "1",
    compress: bool = True,
    guid: int | None = None,
    increments: dict[str, tuple[int, bytes]] | None = None,
) -> Path:
    """The files of a base, the way a publisher using only openssl writes them:
    ``sha256sum`` for the manifest, ``openssl dgst -sha256 -sign`` for each
    signature. ``increments``: from-version -> (its guid, the incremental stream)."""
    directory.mkdir(parents=True, exist_ok=True)
    data = bz2.compress(stream) if compress else stream
    (directory / f"{stem}.zfs.bz2").write_bytes(data)
    size = len(data)
    digests = {}
    for from_version, (_, inc) in (increments or {}).items():
        packed = bz2.compress(inc)
        (directory / f"{stem}.from-{from_version}.zfs.bz2").write_bytes(packed)
        digests[from_version] = hashlib.sha256(packed).hexdigest()
    meta = render_metadata(
        Metadata(name=name or stem, version=version, stream_size=len(stream), compressed_size=size,
                 guid=guid, incremental_from=tuple(
                     Increment(v, g) for v, (g, _) in (increments or {}).items()))
    )  # fmt: skip
    (directory / f"{stem}.base").write_bytes(meta)
    manifest = directory / f"{stem}.sha256"
    meta_sha, data_sha = hashlib.sha256(meta).hexdigest(), hashlib.sha256(data).hexdigest()
    manifest.write_bytes(render_manifest(stem, meta_sha, data_sha, digests))
    for s in signers:
        sig = directory / f"{stem}.sha256sig.{s.fingerprint}"
        openssl("dgst", "-sha256", "-sign", s.key, "-out", sig, manifest)
    return directory / stem


def resign(base: Path, signers: tuple[Signer, ...]) -> None:
    """Sign ``base``'s manifest again (after a test changed it on purpose)."""
    manifest = Path(f"{base}.sha256")
    for s in signers:
        openssl("dgst", "-sha256", "-sign", s.key, "-out", f"{base}.sha256sig.{s.fingerprint}",
                manifest)  # fmt: skip
