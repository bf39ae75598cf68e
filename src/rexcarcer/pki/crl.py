"""Certificate revocation lists (RFC 5280 section 5), from the registry.

Each host's jail CA signs the CRL of its jails (``rex ca crl``; every
revocation rewrites ``$REX_ROOT/jail-ca/crl.pem`` and ``pki/crls/<host>`` in
the store); the CA host signs the cluster CA's own CRL of revoked host
certificates and jail CAs (``$REX_ROOT/ca/crl.pem``, ``pki/root-crl``;
cluster/signer.py). Only unexpired revocations of the signing CA are listed
(RFC 5280 allows dropping an entry once its certificate has expired). The CRL
number is the signing time in seconds, so it only grows.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from rexcarcer.fsutil import atomic_write
from rexcarcer.model import keys
from rexcarcer.pki import PkiError
from rexcarcer.pki.ca import Ca, authority_key_id
from rexcarcer.pki.keys import signing_hash, spki_sha256
from rexcarcer.pki.registry import Revoked

DEFAULT_DAYS = 7

_REASONS = {flag.value: flag for flag in x509.ReasonFlags}


def build(
    ca: Ca, entries: Sequence[Revoked], now: dt.datetime, days: int = DEFAULT_DAYS
) -> x509.CertificateRevocationList:
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca.cert.subject)
        .last_update(now)
        .next_update(now + dt.timedelta(days=days))
        .add_extension(x509.CRLNumber(int(now.timestamp())), critical=False)
        .add_extension(authority_key_id(ca.cert), critical=False)
    )
    for rev in sorted(entries, key=lambda r: r.serial):
        entry = (
            x509.RevokedCertificateBuilder()
            .serial_number(rev.serial)
            .revocation_date(dt.datetime.fromtimestamp(rev.revoked_at, dt.UTC))
        )
        reason = _REASONS.get(rev.reason)
        if reason is not None and reason is not x509.ReasonFlags.unspecified:
            entry = entry.add_extension(x509.CRLReason(reason), critical=False)
        builder = builder.add_revoked_certificate(entry.build())
    return builder.sign(ca.key, signing_hash(ca.key))


def pem(crl: x509.CertificateRevocationList) -> bytes:
    return crl.public_bytes(serialization.Encoding.PEM)


def write(path: Path, data: bytes) -> None:
    try:
        atomic_write(path, data, mode=0o644)
    except OSError as exc:
        raise PkiError(f"cannot write {path}: {exc}") from exc


def store_key(host: str) -> str:
    """Where host ``host`` publishes the CRL of its jail CA."""
    return keys.PKI_CRLS + host


def record(data: bytes, ca: Ca, now: dt.datetime) -> dict[str, Any]:
    """The store value of a CRL: the PEM, and what signed it when."""
    return {"pem": data.decode(), "issuer": spki_sha256(ca.key),
            "updated": int(now.timestamp())}  # fmt: skip
