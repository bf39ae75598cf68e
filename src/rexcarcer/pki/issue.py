"""Issuing a jail's certificate (its names: pki/identity.py).

For jail ``web1`` at 203.0.113.12 with ``HOSTNAME docs.example.com`` and
``SERVICE renderer PORT 1234`` in zone ``rex.internal``, the certificate names
(subjectAltName) are::

    DNS:web1.jail.rex.internal, DNS:docs.example.com,
    DNS:renderer.svc.rex.internal, IP:203.0.113.12

with ``basicConstraints CA:FALSE``, ``keyUsage digitalSignature`` and
``extendedKeyUsage serverAuth, clientAuth``, so that one certificate serves a
jail as a TLS server and as a client of mutual TLS. The key is ECDSA P-256,
generated here and written only into the jail.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from rexcarcer.pki import PkiError
from rexcarcer.pki.ca import BACKDATE, Ca, authority_key_id
from rexcarcer.pki.identity import Identity
from rexcarcer.pki.keys import KeyType, cert_pem, generate, key_pem, signing_hash

MIN_LEAF = dt.timedelta(days=1)


@dataclass(frozen=True, slots=True)
class Issued:
    key_pem: bytes  # never stored outside the jail
    cert: x509.Certificate
    host_crt: bytes  # the leaf, then every CA certificate below the root
    cluster_crt: bytes  # the root(s) to trust


def issue(ca: Ca, ident: Identity, now: dt.datetime, days: int | None = None) -> Issued:
    """A fresh key and a certificate for ``ident``, signed by ``ca``."""
    not_after = min(now + dt.timedelta(days=days or ca.leaf_days), ca.cert.not_valid_after_utc)
    if not_after - now < MIN_LEAF:
        raise PkiError(
            f"the CA certificate expires on {ca.cert.not_valid_after_utc:%Y-%m-%d}: "
            "it cannot issue jail certificates any more",
            hint="renew the intermediate and run `rex ca init --intermediate ... --force`, "
            "or make a new CA with `rex ca init --force`",
        )
    check_constraints(ca, ident)
    key = generate(KeyType.ECDSA_P256)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_subject(ident))
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(not_after)
        .add_extension(x509.SubjectAlternativeName(_sans(ident)), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_leaf_usage(isinstance(key, rsa.RSAPrivateKey)), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(authority_key_id(ca.cert), critical=False)
        .sign(ca.key, signing_hash(ca.key))
    )
    return Issued(key_pem(key), cert, cert_pem(cert) + ca.chain_pem(), ca.trust_pem())


def _subject(ident: Identity) -> x509.Name:
    # X.520 caps a commonName at 64 characters; the SANs carry the full names
    cn = ident.names[0] if len(ident.names[0]) <= 64 else ident.jail
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _sans(ident: Identity) -> list[x509.GeneralName]:
    out: list[x509.GeneralName] = [x509.DNSName(n) for n in ident.names]
    out += [x509.IPAddress(ip) for ip in ident.ips]
    return out


def _leaf_usage(rsa_key: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True, content_commitment=False, key_encipherment=rsa_key,
        data_encipherment=False, key_agreement=False, key_cert_sign=False, crl_sign=False,
        encipher_only=False, decipher_only=False,
    )  # fmt: skip


def check_constraints(ca: Ca, ident: Identity) -> None:
    """Refuse, before signing, what the issuing CA's nameConstraints forbid (a jail
    CA: the host's jail subnet and public ranges, never host.<zone>): every
    verifier would refuse such a certificate."""
    try:
        nc = ca.cert.extensions.get_extension_for_class(x509.NameConstraints).value
    except x509.ExtensionNotFound:
        return
    permitted, excluded = _networks(nc.permitted_subtrees), _networks(nc.excluded_subtrees)
    for ip in ident.ips:
        inside = any(ip.version == n.version and ip in n for n in permitted)
        if (permitted and not inside) or any(ip.version == n.version and ip in n for n in excluded):
            ranges = ", ".join(str(n) for n in permitted) or "none"
            raise PkiError(
                f"jail {ident.jail}: its address {ip} is not one this host's jail CA may "
                f"certify (its addresses: {ranges})",
                hint="give the jail an address in the host's jail subnet, or declare the "
                "public range when joining: `rex cluster join --public-range CIDR`",
            )
    banned = [n.value for n in nc.excluded_subtrees or () if isinstance(n, x509.DNSName)]
    for name in ident.names:
        if any(name == b or name.endswith("." + b) for b in banned):
            raise PkiError(f"jail {ident.jail}: {name} is a name jails may not have",
                           hint="HOSTNAME may not name a host of the cluster")  # fmt: skip


def _networks(
    subtrees: Iterable[x509.GeneralName] | None,
) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    """The address ranges of name-constraint subtrees (RFC 5280: iPAddress is a network)."""
    out = []
    for n in subtrees or ():
        if isinstance(n, x509.IPAddress) and isinstance(
            n.value, ipaddress.IPv4Network | ipaddress.IPv6Network
        ):
            out.append(n.value)
    return out
