"""Signer certificates and signatures, byte-compatible with stock openssl.

``openssl dgst -sha256 -sign KEY -out SIG FILE`` makes a PKCS#1 v1.5 signature
for an RSA key and a DER ``ECDSA-Sig-Value`` for an EC key; that is what
:func:`sign` writes and :func:`verify` checks, so either side may be openssl.
A signer is known by its certificate's fingerprint: the SHA-256 of its DER
encoding, lower-case hex without colons (``openssl x509 -noout -fingerprint
-sha256``, colons removed).

Accepted keys: RSA of 2048 bits or more, ECDSA on P-256 or P-384.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import NameOID

from rexcarcer.base import VerificationError
from rexcarcer.errors import UsageError

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
_CURVES = {"secp256r1": "P-256", "secp384r1": "P-384"}
MIN_RSA_BITS = 2048


@dataclass(frozen=True, slots=True)
class CertInfo:
    fingerprint: str
    subject: str  # the common name, or the whole RFC 4514 subject
    not_before: datetime
    not_after: datetime
    key: str  # "RSA 2048", "EC P-256"

    def status(self, now: datetime) -> str:
        if now < self.not_before:
            return "not yet valid"
        return "expired" if now > self.not_after else "valid"

    def as_json(self, now: datetime) -> dict[str, str]:
        return {
            "fingerprint": self.fingerprint, "subject": self.subject, "key": self.key,
            "not_before": _day(self.not_before), "not_after": _day(self.not_after),
            "status": self.status(now),
        }  # fmt: skip


def _day(when: datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


def now() -> datetime:
    return datetime.now(UTC)


def read_file(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise UsageError(f"cannot read {what} {path}: {exc.strerror or exc}") from exc


def load_certificate(data: bytes, source: str) -> x509.Certificate:
    """A PEM or DER X.509 certificate whose key rex accepts."""
    try:
        if b"-----BEGIN" in data:
            cert = x509.load_pem_x509_certificate(data)
        else:
            cert = x509.load_der_x509_certificate(data)
    except ValueError as exc:
        raise UsageError(
            f"{source} is not an X.509 certificate (PEM or DER)",
            hint="give the signer's certificate, e.g. the --cert given to `rex base publish`",
        ) from exc
    key_kind(cert.public_key(), source)
    return cert


def fingerprint(cert: x509.Certificate) -> str:
    return cert.fingerprint(hashes.SHA256()).hex()


def describe(cert: x509.Certificate) -> CertInfo:
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    subject = str(names[0].value) if names else cert.subject.rfc4514_string()
    return CertInfo(
        fingerprint=fingerprint(cert),
        subject=subject or "(no subject)",
        not_before=cert.not_valid_before_utc,
        not_after=cert.not_valid_after_utc,
        key=key_kind(cert.public_key(), "certificate"),
    )


def key_kind(key: object, source: str) -> str:
    """``RSA 2048`` / ``EC P-256``; any other key is refused."""
    if isinstance(key, rsa.RSAPublicKey | rsa.RSAPrivateKey):
        if key.key_size < MIN_RSA_BITS:
            raise UsageError(
                f"{source}: RSA key of {key.key_size} bits is too small",
                hint=f"use RSA {MIN_RSA_BITS} bits or more, or ECDSA P-256",
            )
        return f"RSA {key.key_size}"
    if isinstance(key, ec.EllipticCurvePublicKey | ec.EllipticCurvePrivateKey):
        if key.curve.name in _CURVES:
            return f"EC {_CURVES[key.curve.name]}"
        raise UsageError(f"{source}: EC curve {key.curve.name} is not supported", hint="use P-256")
    raise UsageError(
        f"{source}: unsupported key type {type(key).__name__}",
        hint="openssl dgst -sha256 -sign needs an RSA (2048+) or ECDSA P-256 key",
    )


def check_validity(info: CertInfo, when: datetime) -> None:
    """Refuse an expired or not-yet-valid certificate, saying which."""
    status = info.status(when)
    who = f"certificate of {info.subject} ({info.fingerprint[:16]}…)"
    if status == "expired":
        raise VerificationError(
            f"{who} expired on {_day(info.not_after)}",
            hint="ask the signer for a renewed certificate and `rex trust add` it",
        )
    if status == "not yet valid":
        raise VerificationError(
            f"{who} is not valid yet: valid from {_day(info.not_before)}",
            hint="check this host's clock (`rex doctor`), or wait until then",
        )


def load_private_key(data: bytes, source: str) -> PrivateKey:
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except TypeError as exc:  # encrypted
        raise UsageError(
            f"private key {source} is encrypted",
            hint="rex reads unencrypted PEM keys: `openssl pkey -in KEY -out PLAIN.key`",
        ) from exc
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise UsageError(f"{source} is not a PEM private key") from exc
    key_kind(key, source)
    assert isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey)
    return key


def check_pair(key: PrivateKey, cert: x509.Certificate, key_src: str, cert_src: str) -> None:
    mine = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    theirs = cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    if mine != theirs:
        raise UsageError(f"key {key_src} does not belong to certificate {cert_src}")


def sign(data: bytes, key: PrivateKey) -> bytes:
    """What ``openssl dgst -sha256 -sign KEY`` writes for ``data``."""
    if isinstance(key, rsa.RSAPrivateKey):
        return key.sign(data, padding.PKCS1v15(), hashes.SHA256())
    return key.sign(data, ec.ECDSA(hashes.SHA256()))


def verify(data: bytes, signature: bytes, cert: x509.Certificate) -> bool:
    """Whether ``openssl dgst -sha256 -verify PUBKEY -signature SIG`` would say OK."""
    key = cert.public_key()
    try:
        if isinstance(key, rsa.RSAPublicKey):
            key.verify(signature, data, padding.PKCS1v15(), hashes.SHA256())
        elif isinstance(key, ec.EllipticCurvePublicKey):
            key.verify(signature, data, ec.ECDSA(hashes.SHA256()))
        else:
            return False
    except InvalidSignature:
        return False
    return True
