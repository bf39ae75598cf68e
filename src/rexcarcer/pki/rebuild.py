"""The certificate registry (``pki/certs/<jail>``) put back from the certificates
in the jails, for ``rex state rebuild``.

A jail's ``/etc/ssl/rc/host.crt`` is the jail's own file: root in the jail may
have replaced it. Its first certificate is recorded only when this host's jail
CA signed it, it names exactly the jail's names and address (pki/identity.py),
it has not expired and the jail CA's CRL (``$REX_ROOT/jail-ca/crl.pem``, a host
file) does not list it. Otherwise nothing is recorded, the reason is noted, and
the jail's next start issues a new certificate (hook.py ``ensure_identity``).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rexcarcer.jailfs import read_small
from rexcarcer.pki import PkiError, registry
from rexcarcer.pki.certrecord import CERT, SSL_DIR, cert_record, key_file
from rexcarcer.pki.identity import identity_for
from rexcarcer.pki.layout import JailCaPaths

if TYPE_CHECKING:
    from cryptography import x509

    from rexcarcer.host import Host
    from rexcarcer.model.recordprop import RebuiltJail
    from rexcarcer.pki.ca import Ca

NEXT_START = "its next start issues a new one"


def rebuild_registry(host: Host, jails: Sequence[RebuiltJail]) -> list[tuple[str, str]]:
    """Record each jail's certificate found on disk; (jail, why not) for the others."""
    paths = JailCaPaths.under(host.config.root)
    if not jails:
        return []
    if not paths.exists():
        return [(j.rec.name, f"no jail CA in {paths.dir}: {NEXT_START}") for j in jails]
    from rexcarcer.pki import jailca
    from rexcarcer.pki.keys import spki_sha256

    authority = jailca.load(paths)
    issuer = spki_sha256(authority.key)
    revoked = _revoked(paths.crl)
    now = dt.datetime.now(dt.UTC)
    notes: list[tuple[str, str]] = []
    for j in jails:
        name = j.rec.name
        if registry.current(host.store, name) is not None:
            continue
        try:
            found = from_disk(j, authority, issuer, host.config.zone, revoked, now)
        except PkiError as exc:
            notes.append((name, f"certificate not recorded: {exc.message}; {NEXT_START}"))
            continue
        registry.record_issued(host.store, name, found)
    return notes


def from_disk(
    j: RebuiltJail, authority: Ca, issuer: str, zone: str, revoked: set[int], now: dt.datetime
) -> dict[str, Any]:
    """The registry record of the certificate in jail ``j``, checked (module docstring)."""
    from cryptography import x509
    from cryptography.exceptions import InvalidSignature

    data = read_small(j.root, f"{SSL_DIR}/{CERT}") if j.root is not None else None
    if data is None:
        raise PkiError(f"no {SSL_DIR}/{CERT} in the jail")
    try:
        cert = x509.load_pem_x509_certificates(data)[0]
    except ValueError as exc:
        raise PkiError(f"{SSL_DIR}/{CERT} holds no PEM certificate") from exc
    try:
        cert.verify_directly_issued_by(authority.cert)
    except (ValueError, TypeError, InvalidSignature) as exc:
        raise PkiError("its certificate was not issued by this host's jail CA") from exc
    ident = identity_for(j.rec, zone)
    if _sans(cert) != ({*ident.names}, {*ident.ips}):
        raise PkiError("its certificate names other names or addresses than the jail has")
    if cert.not_valid_after_utc <= now:
        raise PkiError("its certificate has expired")
    if cert.serial_number in revoked:
        raise PkiError(f"its certificate (serial {cert.serial_number:x}) is revoked")
    out = cert_record(cert, ident, issuer)
    assert j.root is not None
    if (kf := key_file(Path(j.root))) is not None:
        out["key_file"] = kf
    return out


def _sans(cert: x509.Certificate) -> tuple[set[str], set[Any]]:
    from cryptography import x509

    try:
        ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return set(), set()
    ips = {ipaddress.ip_address(str(ip)) for ip in ext.get_values_for_type(x509.IPAddress)}
    return set(ext.get_values_for_type(x509.DNSName)), ips


def _revoked(path: Path) -> set[int]:
    """The serials the jail CA's CRL lists (none without a CRL)."""
    from cryptography import x509

    try:
        crl = x509.load_pem_x509_crl(path.read_bytes())
    except FileNotFoundError:
        return set()
    except ValueError as exc:
        raise PkiError(f"cannot read the jail CRL {path}: {exc}") from exc
    return {r.serial_number for r in crl}
