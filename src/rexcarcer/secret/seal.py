"""A secret sealed to one host's public key, and opened with its private key.
Pure (no I/O); imported only where a cluster needs it (``cryptography`` is slow
to import).

ECIES with the ``cryptography`` primitives, as SEC 1 section 5.1 and RFC 9180's
DHKEM describe it, for a P-256 recipient (the host's key, hostkey.py):

1. a fresh key pair on the recipient's curve; ECDH of its private half with the
   recipient's public key gives the shared secret;
2. HKDF-SHA256 (RFC 5869) of the shared secret, salted with the fresh public
   key (X9.62 uncompressed point), ``info`` naming this scheme and the
   recipient's key, gives a 256-bit key, used once;
3. AES-256-GCM (NIST SP 800-38D) with a random 96-bit nonce encrypts the value,
   with the secret's name, the host's name and the recipient key's fingerprint
   as associated data: a copy moved to another name or host in etcd does not
   open, it fails as altered.

A copy records the SHA-256 of the recipient's SubjectPublicKeyInfo, so a host
whose key changed is told so instead of failing to decrypt.
"""

from __future__ import annotations

import base64
import os
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from rexcarcer.pki.keys import spki_sha256
from rexcarcer.secret import SecretError

SCHEME = "ecdh-p256-hkdf-sha256-aes256gcm"
INFO = b"rexcarcer sealed secret v1"


@dataclass(frozen=True, slots=True)
class Sealed:
    key: str  # sha256 hex of the recipient's SubjectPublicKeyInfo
    epk: bytes  # the fresh public key, X9.62 uncompressed
    nonce: bytes
    ct: bytes  # ciphertext and GCM tag

    def as_json(self) -> dict[str, Any]:
        b64 = base64.b64encode
        return {
            "scheme": SCHEME,
            "key": self.key,
            "epk": b64(self.epk).decode(),
            "nonce": b64(self.nonce).decode(),
            "ct": b64(self.ct).decode(),
        }

    @classmethod
    def from_json(cls, data: Any) -> Sealed:
        try:
            if data.get("scheme") != SCHEME:
                raise ValueError(f"unknown scheme {data.get('scheme')!r}")
            d64 = base64.b64decode
            return cls(
                str(data["key"]),
                d64(data["epk"], validate=True),
                d64(data["nonce"], validate=True),
                d64(data["ct"], validate=True),
            )
        except (AttributeError, KeyError, TypeError, ValueError) as exc:
            raise SecretError(
                f"a sealed copy in the store is malformed: {exc}",
                hint="set the secret again: rex secret set NAME",
            ) from exc


def _aad(name: str, host: str, key: str) -> bytes:
    return b"\0".join([INFO, name.encode(), host.encode(), key.encode()])


def _derive(shared: bytes, epk: bytes, key: str) -> bytes:
    hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=epk, info=INFO + b"\0" + key.encode())
    return hkdf.derive(shared)


def public_key(spki_der: bytes) -> ec.EllipticCurvePublicKey:
    """A host's published key (DER SubjectPublicKeyInfo); only EC keys can be sealed to."""
    try:
        key = serialization.load_der_public_key(spki_der)
    except ValueError as exc:
        raise SecretError(f"a published host key is not a public key: {exc}") from exc
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise SecretError(
            f"a published host key is {type(key).__name__}, not an EC key",
            hint="secrets are sealed with ECDH: the host key must be EC",
        )
    return key


def seal(value: bytes, *, name: str, host: str, recipient: ec.EllipticCurvePublicKey) -> Sealed:
    key = spki_sha256(recipient)
    fresh = ec.generate_private_key(recipient.curve)
    epk = fresh.public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )
    aead = AESGCM(_derive(fresh.exchange(ec.ECDH(), recipient), epk, key))
    nonce = os.urandom(12)
    return Sealed(key, epk, nonce, aead.encrypt(nonce, value, _aad(name, host, key)))


def open_sealed(
    sealed: Sealed, *, name: str, host: str, private: ec.EllipticCurvePrivateKey
) -> bytes:
    key = spki_sha256(private)
    if sealed.key != key:
        raise SecretError(
            f"secret {name} was sealed to another key of host {host} (sha256:{sealed.key[:16]}…; "
            f"the host's key now is sha256:{key[:16]}…)",
            hint=f"set it again from any host so it is sealed to the current keys: "
            f"rex secret set {name}",
        )
    try:
        epk = ec.EllipticCurvePublicKey.from_encoded_point(private.curve, sealed.epk)
        aead = AESGCM(_derive(private.exchange(ec.ECDH(), epk), sealed.epk, key))
        return aead.decrypt(sealed.nonce, sealed.ct, _aad(name, host, key))
    except (InvalidTag, ValueError) as exc:
        raise SecretError(
            f"the copy of secret {name} for host {host} does not open: it was altered, or "
            "belongs to another secret or host",
            hint=f"set it again: rex secret set {name}",
        ) from exc
