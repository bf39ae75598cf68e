"""Keys and certificate files: generate, load (with clear refusals), compare.

Only PKI modules import this, and only the commands that need it import them:
``cryptography`` costs about 75 ms at start-up (notes/linux-testbed.md section 8).
"""

from __future__ import annotations

import hashlib
from enum import StrEnum
from pathlib import Path
from typing import TypeAlias

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import (
    CertificateIssuerPrivateKeyTypes,
    CertificatePublicKeyTypes,
)

from rexcarcer.pki import PkiError

SigningKey: TypeAlias = CertificateIssuerPrivateKeyTypes
PublicKey: TypeAlias = CertificatePublicKeyTypes

MAX_FILE = 1 << 20  # a key or a certificate bundle is a few kilobytes


class KeyType(StrEnum):
    ECDSA_P256 = "ecdsa-p256"
    ECDSA_P384 = "ecdsa-p384"
    RSA_3072 = "rsa-3072"


def generate(kind: KeyType = KeyType.ECDSA_P256) -> SigningKey:
    if kind is KeyType.ECDSA_P256:
        return ec.generate_private_key(ec.SECP256R1())
    if kind is KeyType.ECDSA_P384:
        return ec.generate_private_key(ec.SECP384R1())
    # Ed25519 is left out on purpose: the Web PKI profile (CA/B Forum, and
    # cryptography's own verifier) refuses Ed25519 certificates
    return rsa.generate_private_key(public_exponent=65537, key_size=3072)


def signing_hash(key: SigningKey) -> hashes.SHA256 | hashes.SHA384 | None:
    """The digest to sign with; Ed25519 and Ed448 take none (RFC 8410)."""
    if isinstance(key, ed25519.Ed25519PrivateKey | ed448.Ed448PrivateKey):
        return None
    if isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.key_size > 256:
        return hashes.SHA384()
    return hashes.SHA256()


def describe_key(key: SigningKey | PublicKey) -> str:
    if isinstance(key, ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey):
        return f"ECDSA {key.curve.name}"
    if isinstance(key, rsa.RSAPrivateKey | rsa.RSAPublicKey):
        return f"RSA {key.key_size}"
    if isinstance(key, ed25519.Ed25519PrivateKey | ed25519.Ed25519PublicKey):
        return "Ed25519"
    return type(key).__name__


def key_pem(key: SigningKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


_PRIVATE = (
    ec.EllipticCurvePrivateKey, rsa.RSAPrivateKey, ed25519.Ed25519PrivateKey,
    ed448.Ed448PrivateKey,
)  # fmt: skip


def spki(key: SigningKey | PublicKey) -> bytes:
    """The DER SubjectPublicKeyInfo of a key (of the public half of a private key)."""
    public: PublicKey = key.public_key() if isinstance(key, _PRIVATE) else key  # type: ignore[assignment]
    return public.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def spki_sha256(key: SigningKey | PublicKey) -> str:
    return hashlib.sha256(spki(key)).hexdigest()


def fingerprint(cert: x509.Certificate) -> str:
    """SHA-256 of the DER certificate, lower-case hex without colons."""
    return cert.fingerprint(hashes.SHA256()).hex()


def read_file(path: Path, what: str) -> bytes:
    try:
        with path.open("rb") as f:
            data = f.read(MAX_FILE + 1)
    except OSError as exc:
        raise PkiError(
            f"cannot read the {what} {path}: {exc.strerror or exc}",
            hint="check the path and its permissions (rex runs as root)",
        ) from exc
    if len(data) > MAX_FILE:
        raise PkiError(f"the {what} {path} is larger than {MAX_FILE} bytes; is it the right file?")
    return data


def load_private_key(path: Path) -> SigningKey:
    data = read_file(path, "key")
    try:
        if b"-----BEGIN" in data:
            key = serialization.load_pem_private_key(data, password=None)
        else:
            key = serialization.load_der_private_key(data, password=None)
    except TypeError as exc:  # "Password was not given but private key is encrypted"
        raise PkiError(
            f"the key {path} is encrypted",
            hint=f"rex keeps the issuing key unencrypted (mode 0600): "
            f"openssl pkey -in {path} -out KEY.plain",
        ) from exc
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise PkiError(
            f"{path} is not a private key rex can read: {exc}",
            hint="give a PEM or DER private key (PKCS#8, SEC1 or PKCS#1)",
        ) from exc
    if not isinstance(
        key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey
    ):
        raise PkiError(
            f"{path}: {type(key).__name__} keys cannot sign certificates here",
            hint="use an ECDSA, RSA or Ed25519 key",
        )
    return key


def load_certificates(path: Path, what: str = "certificate") -> list[x509.Certificate]:
    """Every certificate of a PEM bundle (in order), or one DER certificate."""
    data = read_file(path, what)
    try:
        if b"-----BEGIN" in data:
            certs = x509.load_pem_x509_certificates(data)
        else:
            certs = [x509.load_der_x509_certificate(data)]
    except ValueError as exc:
        raise PkiError(
            f"{path} is not a certificate rex can read: {exc}",
            hint="give a PEM (or DER) X.509 certificate",
        ) from exc
    return certs


def cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)
