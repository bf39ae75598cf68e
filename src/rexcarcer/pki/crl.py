"""The CA's certificate revocation list (RFC 5280 section 5), from the registry.

Only unexpired revocations of the current issuing CA are listed (RFC 5280
allows dropping an entry once its certificate has expired). The CRL number is
the signing time in seconds, so it only grows. ``rex ca crl`` prints a fresh
one; every revocation also rewrites ``$REX_ROOT/ca/crl.pem``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from rexcarcer.fsutil import atomic_write
from rexcarcer.pki import PkiError
from rexcarcer.pki.ca import Ca, authority_key_id
from rexcarcer.pki.keys import signing_hash
from rexcarcer.pki.layout import CaPaths
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


def write(paths: CaPaths, data: bytes) -> None:
    try:
        atomic_write(paths.crl, data, mode=0o644)
    except OSError as exc:
        raise PkiError(f"cannot write {paths.crl}: {exc}") from exc
