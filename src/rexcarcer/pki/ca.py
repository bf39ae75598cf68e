"""The cluster CA on disk: ``rex ca init``, ``rex ca show``, and loading it to issue.

It signs host certificates and the per-host jail CAs (pki/roles.py), which sign
the jails' certificates. It lives on one host, the CA host (``rex cluster
init`` ran there), or on a single host. Layout under ``$REX_ROOT/ca/``
(directory 0700)::

    ca.key       the issuing key, 0600: rex's own root key, or the user's intermediate's
    ca.crt       the issuing certificate
    chain.crt    certificates between the issuing one and the root (intermediate mode)
    cluster.crt  the trust anchor: what every jail trusts (rex's root, or the user's root)
    ca.json      settings: mode, leaf validity, creation time, public ranges
    crl.pem      the CA's own CRL (revoked host certificates and jail CAs)
    join.key     0600, on the CA host: the secret join tokens are derived from

A new CA is written into a fresh directory and renamed into place, so a refused
or interrupted ``rex ca init`` leaves the previous state exactly as it was.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import ipaddress
import json
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.x509.oid import NameOID

from rexcarcer.errors import Conflict, NotFound
from rexcarcer.fsutil import atomic_write
from rexcarcer.pki import PkiError
from rexcarcer.pki.keys import (
    KeyType,
    SigningKey,
    cert_pem,
    describe_key,
    fingerprint,
    generate,
    key_pem,
    load_certificates,
    load_private_key,
    signing_hash,
    spki,
)
from rexcarcer.pki.layout import CaPaths

DEFAULT_NAME = "RexCarcer CA"
DEFAULT_DAYS = 3650
DEFAULT_LEAF_DAYS = 90
BACKDATE = dt.timedelta(minutes=5)  # tolerate a little clock skew between hosts


@dataclass(frozen=True, slots=True)
class Ca:
    """A loaded CA: what issuing a jail certificate needs."""

    key: SigningKey
    cert: x509.Certificate
    chain: tuple[x509.Certificate, ...]  # above ``cert``, below the root
    trust: tuple[x509.Certificate, ...]  # the root(s) jails trust
    mode: str  # "self-signed" or "intermediate"
    leaf_days: int

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.cert)

    def chain_pem(self) -> bytes:
        """What follows the leaf in ``host.crt``: every CA certificate except the root."""
        above = [] if self.cert in self.trust else [self.cert]
        return b"".join(cert_pem(c) for c in (*above, *self.chain))

    def trust_pem(self) -> bytes:
        return b"".join(cert_pem(c) for c in self.trust)


@dataclass(frozen=True, slots=True)
class CaSettings:
    name: str = DEFAULT_NAME
    days: int = DEFAULT_DAYS
    key_type: KeyType = KeyType.ECDSA_P256
    leaf_days: int = DEFAULT_LEAF_DAYS


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


# -- creating ------------------------------------------------------------------


def self_signed(settings: CaSettings, now: dt.datetime) -> Ca:
    """A new root CA: ECDSA P-256 by default, CA:TRUE with pathlen 1: it signs host
    certificates and one level of per-host jail CAs (pki/roles.py), nothing deeper."""
    _check_settings(settings)
    key = generate(settings.key_type)
    name = x509.Name([
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "RexCarcer"),
        x509.NameAttribute(NameOID.COMMON_NAME, settings.name),
    ])  # fmt: skip
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + dt.timedelta(days=settings.days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=1), critical=True)
        .add_extension(_ca_usage(), critical=True)
        .add_extension(ski, critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False
        )
        .sign(key, signing_hash(key))
    )
    return Ca(key, cert, (), (cert,), "self-signed", settings.leaf_days)


def _ca_usage() -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True, content_commitment=False, key_encipherment=False,
        data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
        encipher_only=False, decipher_only=False,
    )  # fmt: skip


def _check_settings(settings: CaSettings) -> None:
    if not settings.name.strip() or len(settings.name) > 64:
        raise PkiError(f"bad CA name {settings.name!r}", hint="give 1 to 64 characters")
    if not 1 <= settings.days <= 36500:
        raise PkiError(f"bad CA validity: {settings.days} days", hint="give 1 to 36500 days")
    if not 1 <= settings.leaf_days <= 3650:
        raise PkiError(
            f"bad jail certificate validity: {settings.leaf_days} days",
            hint="give 1 to 3650 days (default 90)",
        )


def intermediate(
    cert_path: Path,
    key_path: Path,
    chain_path: Path | None,
    leaf_days: int,
    now: dt.datetime,
) -> Ca:
    """The user's intermediate, checked: a CA, matching its key, valid now, chained
    (in CERT after the intermediate, or in ``--chain``) up to a self-signed root."""
    _check_settings(CaSettings(leaf_days=leaf_days))
    certs = load_certificates(cert_path, "intermediate certificate")
    key = load_private_key(key_path)
    if chain_path is not None:
        certs += load_certificates(chain_path, "chain")
    cert, above = certs[0], certs[1:]
    if spki(cert.public_key()) != spki(key):
        raise PkiError(
            f"the key {key_path} does not belong to the certificate {cert_path}",
            hint="give the private key of the intermediate certificate (the first one in CERT)",
        )
    check_issuing_ca(cert, str(cert_path), now)
    # every host's jail CA sits one level below the intermediate (pki/roles.py)
    _check_path_length(cert, 1)
    for below, (child, parent) in enumerate(zip(certs, above, strict=False), start=2):
        check_issued_by(child, parent)
        check_issuing_ca(parent, _subject(parent), now, crls=False)
        _check_path_length(parent, below)
    top = certs[-1]
    if not is_self_signed(top):
        raise PkiError(
            f"the chain of {cert_path} stops at {_subject(top)}, which is not a root",
            hint="append the issuers up to your root CA: cat intermediate.crt root.crt > "
            "bundle.crt, or pass --chain FILE",
        )
    chain = tuple(c for c in above if c is not top)
    return Ca(key, cert, chain, (top,), "intermediate", leaf_days)


def _subject(cert: x509.Certificate) -> str:
    return cert.subject.rfc4514_string() or "(empty subject)"


def _ext(cert: x509.Certificate, kind: type[Any]) -> Any:
    with contextlib.suppress(x509.ExtensionNotFound):
        return cert.extensions.get_extension_for_class(kind).value
    return None


def check_issuing_ca(
    cert: x509.Certificate, label: str, now: dt.datetime, *, crls: bool = True
) -> None:
    """Refuse a certificate that cannot issue certificates (and, for the one rex
    signs with, CRLs) today."""
    bc = _ext(cert, x509.BasicConstraints)
    if bc is None or not bc.ca:
        raise PkiError(
            f"{label} is not a CA certificate (basicConstraints CA:TRUE is missing)",
            hint="ask your PKI for an intermediate CA certificate: basicConstraints "
            "CA:TRUE, keyUsage keyCertSign and cRLSign",
        )
    ku = _ext(cert, x509.KeyUsage)
    if ku is not None and not (ku.key_cert_sign and (ku.crl_sign or not crls)):
        raise PkiError(
            f"{label} may not sign certificates and CRLs (keyUsage)",
            hint="its keyUsage needs keyCertSign and cRLSign",
        )
    if not cert.not_valid_before_utc <= now < cert.not_valid_after_utc:
        raise PkiError(
            f"{label} is not valid now (valid {cert.not_valid_before_utc:%Y-%m-%d} to "
            f"{cert.not_valid_after_utc:%Y-%m-%d})",
            hint="check the certificate, and the host's clock (`rex doctor`)",
        )


def _check_path_length(parent: x509.Certificate, below: int) -> None:
    """RFC 5280 4.2.1.9: ``parent`` allows at most pathLenConstraint CAs below it."""
    limit = _ext(parent, x509.BasicConstraints).path_length
    if limit is not None and limit < below:
        raise PkiError(
            f"{_subject(parent)} allows {limit} CA certificate(s) below it, and the chain "
            f"has {below} (counting the per-host jail CA rex puts below the intermediate)",
            hint="issue the intermediate from a CA whose pathLenConstraint allows it "
            "(the intermediate needs pathLenConstraint 1 or none)",
        )


def authority_key_id(issuer: x509.Certificate) -> x509.AuthorityKeyIdentifier:
    """What a certificate or CRL ``issuer`` signs carries, to match its SKI."""
    ski = _ext(issuer, x509.SubjectKeyIdentifier)
    if ski is not None:
        return x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)
    return x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.public_key())  # type: ignore[arg-type]


def check_issued_by(child: x509.Certificate, parent: x509.Certificate) -> None:
    try:
        child.verify_directly_issued_by(parent)
    except (ValueError, TypeError, InvalidSignature) as exc:
        raise PkiError(
            f"the chain is broken: {_subject(child)} is not signed by {_subject(parent)}",
            hint="list the certificates in order: the intermediate first, its root last",
        ) from exc


def is_self_signed(cert: x509.Certificate) -> bool:
    if cert.issuer != cert.subject:
        return False
    try:
        cert.verify_directly_issued_by(cert)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


# -- on disk ------------------------------------------------------------------------


def install(
    paths: CaPaths, ca: Ca, *, now: dt.datetime, force: bool = False,
    public_ranges: Sequence[str] = (),
) -> Path | None:  # fmt: skip
    """Write ``ca`` as the CA; returns where a replaced CA was kept (``force``).
    ``public_ranges``: addresses outside the jail subnet this host's jail CA may
    certify (pki/jailca.py)."""
    if paths.exists() and not force:
        raise Conflict(
            f"a CA already exists in {paths.dir}",
            hint="`rex ca show` describes it; `rex ca init --force` replaces it (every jail "
            "then gets a new certificate at its next start, or with `rex ca renew`)",
        )
    tmp = paths.dir.with_name(f"{paths.dir.name}.new-{os.getpid()}")
    try:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(mode=0o700, parents=True)
        _write(tmp / paths.key.name, key_pem(ca.key), 0o600)
        _write(tmp / paths.cert.name, cert_pem(ca.cert), 0o644)
        _write(tmp / paths.chain.name, b"".join(cert_pem(c) for c in ca.chain), 0o644)
        _write(tmp / paths.trust.name, ca.trust_pem(), 0o644)
        meta = {
            "version": 1,
            "mode": ca.mode,
            "leaf_days": ca.leaf_days,
            "created": now.isoformat(timespec="seconds"),
            "fingerprint": ca.fingerprint,
            "public_ranges": [str(ipaddress.ip_network(r)) for r in public_ranges],
        }
        _write(tmp / paths.meta.name, json.dumps(meta, indent=2).encode() + b"\n", 0o644)
        kept = None
        if paths.dir.exists():
            kept = paths.dir.with_name(f"{paths.dir.name}.replaced-{now:%Y%m%dT%H%M%SZ}")
            paths.dir.rename(kept)
        tmp.rename(paths.dir)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise PkiError(f"cannot write the CA into {paths.dir}: {exc}") from exc
    return kept


def _write(path: Path, data: bytes, mode: int) -> None:
    atomic_write(path, data, mode=mode)


def load(paths: CaPaths) -> Ca:
    if not paths.exists():
        raise NotFound(f"no CA in {paths.dir}", hint="create one with `rex ca init`")
    try:
        meta = json.loads(paths.meta.read_text())
    except (OSError, ValueError) as exc:
        raise PkiError(f"cannot read {paths.meta}: {exc}") from exc
    key = load_private_key(paths.key)
    cert = load_certificates(paths.cert)[0]
    chain = tuple(load_certificates(paths.chain, "chain")) if paths.chain.stat().st_size else ()
    trust = tuple(load_certificates(paths.trust, "trust anchor"))
    if spki(cert.public_key()) != spki(key):
        raise PkiError(
            f"{paths.key} does not belong to {paths.cert}",
            hint="restore the CA directory, or `rex ca init --force`",
        )
    return Ca(
        key,
        cert,
        chain,
        trust,
        str(meta.get("mode", "self-signed")),
        int(meta.get("leaf_days", DEFAULT_LEAF_DAYS)),
    )


def public_ranges(paths: CaPaths) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    """The public ranges ``rex ca init --public-range`` declared for this host's jails."""
    try:
        meta = json.loads(paths.meta.read_text())
    except (OSError, ValueError):
        return []
    return [ipaddress.ip_network(r) for r in meta.get("public_ranges", [])]


def describe_cert(cert: x509.Certificate) -> dict[str, Any]:
    return {
        "subject": _subject(cert),
        "issuer": cert.issuer.rfc4514_string(),
        "serial": format(cert.serial_number, "x"),
        "fingerprint_sha256": fingerprint(cert),
        "not_before": cert.not_valid_before_utc.isoformat(),
        "not_after": cert.not_valid_after_utc.isoformat(),
        "key": describe_key(cert.public_key()),
    }


def describe(paths: CaPaths, ca: Ca) -> dict[str, Any]:
    out = describe_cert(ca.cert)
    out.update(
        mode=ca.mode,
        jail_certificate_days=ca.leaf_days,
        directory=str(paths.dir),
        chain=[_subject(c) for c in ca.chain],
        trust_anchor=[describe_cert(c) for c in ca.trust],
    )
    return out
