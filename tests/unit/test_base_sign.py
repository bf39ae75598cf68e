"""Signatures interoperate with the real openssl command, both ways."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from rexcarcer.base import VerificationError
from rexcarcer.base import sign as signing
from rexcarcer.errors import UsageError
from tests.base_support import dated_signer, openssl, openssl_signer

KINDS = ["rsa", "ec"]


def _cert(path: Path):  # type: ignore[no-untyped-def]
    return signing.load_certificate(path.read_bytes(), str(path))


@pytest.mark.parametrize("kind", KINDS)
def test_openssl_signature_verifies_in_rex(tmp_path: Path, kind: str) -> None:
    s = openssl_signer(tmp_path, "pub", kind)
    manifest = tmp_path / "x.sha256"
    manifest.write_bytes(b"a" * 64 + b"  x.base\n")
    sig = tmp_path / "x.sig"
    openssl("dgst", "-sha256", "-sign", s.key, "-out", sig, manifest)
    cert = _cert(s.cert)
    assert signing.verify(manifest.read_bytes(), sig.read_bytes(), cert)
    assert not signing.verify(manifest.read_bytes() + b"\n", sig.read_bytes(), cert)
    # one bit of the last byte flipped: always another signature (setting the byte to
    # 0 left it unchanged whenever it was 0 already, one run in 256 per key kind)
    signature = sig.read_bytes()
    flipped = signature[:-1] + bytes([signature[-1] ^ 0x01])
    assert flipped != signature
    assert not signing.verify(manifest.read_bytes(), flipped, cert)


@pytest.mark.parametrize("kind", KINDS)
def test_rex_signature_verifies_with_openssl(tmp_path: Path, kind: str) -> None:
    s = openssl_signer(tmp_path, "pub", kind)
    manifest = tmp_path / "x.sha256"
    manifest.write_bytes(b"b" * 64 + b"  x.zfs.bz2\n")
    key = signing.load_private_key(s.key.read_bytes(), str(s.key))
    sig = tmp_path / "x.sig"
    sig.write_bytes(signing.sign(manifest.read_bytes(), key))
    out = openssl("dgst", "-sha256", "-verify", s.pubkey(), "-signature", sig, manifest)
    assert out.strip() == b"Verified OK"


def test_fingerprint_is_openssls_without_colons(tmp_path: Path) -> None:
    s = openssl_signer(tmp_path, "pub", "ec")
    text = openssl("x509", "-in", s.cert, "-noout", "-fingerprint", "-sha256").decode()
    expected = text.strip().split("=", 1)[1].replace(":", "").lower()
    assert signing.fingerprint(_cert(s.cert)) == expected == s.fingerprint
    der = tmp_path / "pub.der"
    openssl("x509", "-in", s.cert, "-outform", "DER", "-out", der)
    assert signing.fingerprint(_cert(der)) == expected  # DER reads too


def test_describe_names_subject_and_key(tmp_path: Path) -> None:
    info = signing.describe(_cert(openssl_signer(tmp_path, "alice", "rsa").cert))
    assert (info.subject, info.key, info.status(signing.now())) == ("alice", "RSA 2048", "valid")
    assert signing.describe(_cert(openssl_signer(tmp_path, "bob", "ec").cert)).key == "EC P-256"


def test_key_must_match_certificate(tmp_path: Path) -> None:
    a, b = openssl_signer(tmp_path, "a", "ec"), openssl_signer(tmp_path, "b", "ec")
    key = signing.load_private_key(a.key.read_bytes(), "a.key")
    with pytest.raises(UsageError, match="does not belong"):
        signing.check_pair(key, _cert(b.cert), "a.key", "b.crt")


def test_small_rsa_and_encrypted_keys_are_refused(tmp_path: Path) -> None:
    small = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    pem = small.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    with pytest.raises(UsageError, match="1024 bits is too small"):
        signing.load_private_key(pem, "small.key")
    s = openssl_signer(tmp_path, "enc", "ec")
    locked = openssl("pkey", "-in", s.key, "-aes256", "-passout", "pass:secret")
    with pytest.raises(UsageError, match="encrypted") as err:
        signing.load_private_key(locked, "enc.key")
    assert err.value.hint is not None and "openssl pkey" in err.value.hint
    with pytest.raises(UsageError, match=r"not an X\.509 certificate"):
        signing.load_certificate(b"-----BEGIN CERTIFICATE-----\nxx\n", "junk.crt")


def test_expired_and_not_yet_valid_say_so(tmp_path: Path) -> None:
    old = dated_signer(tmp_path, "old", start_days=-60, end_days=-1)
    future = dated_signer(tmp_path, "future", start_days=10, end_days=60)
    with pytest.raises(VerificationError, match=r"certificate of old \(.*\) expired on 20"):
        signing.check_validity(signing.describe(_cert(old.cert)), signing.now())
    with pytest.raises(VerificationError, match="is not valid yet: valid from 20"):
        signing.check_validity(signing.describe(_cert(future.cert)), signing.now())
