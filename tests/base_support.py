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

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from rexcarcer.base.manifest import ZFS_MAGIC, Metadata, render_manifest, render_metadata


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


def fake_zfs_stream(size: int = 4096) -> bytes:
    """Bytes that begin like a ``zfs send`` stream (DRR_BEGIN, little-endian)."""
    head = bytes(8) + ZFS_MAGIC.to_bytes(8, "little")
    return head + bytes(range(256)) * (size // 256)


def write_published(
    directory: Path,
    stem: str,
    stream: bytes,
    *,
    signers: tuple[Signer, ...] = (),
    name: str | None = None,
    version: str = "1",
    compress: bool = True,
) -> Path:
    """The four files of a base, the way a publisher using only openssl writes them:
    ``sha256sum`` for the manifest, ``openssl dgst -sha256 -sign`` for each signature."""
    directory.mkdir(parents=True, exist_ok=True)
    data = bz2.compress(stream) if compress else stream
    (directory / f"{stem}.zfs.bz2").write_bytes(data)
    size = len(data)
    meta = render_metadata(
        Metadata(name=name or stem, version=version, stream_size=len(stream), compressed_size=size)
    )
    (directory / f"{stem}.base").write_bytes(meta)
    manifest = directory / f"{stem}.sha256"
    manifest.write_bytes(
        render_manifest(stem, hashlib.sha256(meta).hexdigest(), hashlib.sha256(data).hexdigest())
    )
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
