"""Roles in the cluster PKI: what makes a host's certificate a host's, and keeps a
jail's certificate from ever passing as one.

::

    cluster CA (ca.crt: rex's root, or your intermediate; pathLenConstraint >= 1)
    ├── host certificate of h1    issued by the cluster CA itself, with the
    │                             certificate policy HOST_POLICY; SANs exactly
    │                             h1.host.<zone> and h1's cluster address
    └── jail CA of h1             CA:TRUE, pathLenConstraint 0, nameConstraints:
        │                         permitted IP = h1's jail subnet (+ the public
        │                         ranges declared for it), excluded IP = h1's own
        │                         address in that subnet, excluded DNS = host.<zone>
        └── the certificates of h1's jails

A host certificate is recognised by *who signed it*: the cluster CA's own key,
checked with its public key (``host_of``). Only the CA host holds that key
(``$REX_ROOT/ca/ca.key``); the issuance path of jails only ever holds a jail CA
key, whose certificates are one level further down. The policy OID is a second,
explicit marker (RFC 5280 4.2.1.4): the jail path never writes it.

What X.509 cannot constrain: a jail's HOSTNAME may be any DNS name (that is what
it is for), so the jail CA carries no permitted DNS subtrees; only host.<zone>
is excluded. Names under jail.<zone> and svc.<zone> cannot be tied to one host
either (any host may run jail ``web`` or a ``renderer`` instance): rex refuses a
HOSTNAME there at ``rex up`` (names.reserved_name_problem), and issues
``<jail>.jail.<zone>`` and SERVICE names only from the jail's record.

``HOST_POLICY`` is ``2.25.288200484560246722413943436687405552071``, an OID of
the UUID arc (ITU-T X.667: 2.25 followed by the UUID as one integer), UUID
``d8d164f2-2a50-4751-b56f-ecd34e7511c7``, made for "RexCarcer cluster host".
"""

from __future__ import annotations

import contextlib
import datetime as dt
import ipaddress
from collections.abc import Sequence
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from rexcarcer.pki import PkiError
from rexcarcer.pki.ca import BACKDATE, Ca, authority_key_id
from rexcarcer.pki.keys import PublicKey, SigningKey, signing_hash

HOST_POLICY = x509.ObjectIdentifier("2.25.288200484560246722413943436687405552071")
HOST_DAYS = 90  # renewed in the last third (the agent does it)
JAIL_CA_DAYS = 365
RENEW_FRACTION = 2 / 3

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def host_dns_name(host: str, zone: str) -> str:
    return f"{host}.host.{zone}"


def _not_after(issuer: Ca, now: dt.datetime, days: int) -> dt.datetime:
    end = min(now + dt.timedelta(days=days), issuer.cert.not_valid_after_utc)
    if end - now < dt.timedelta(days=1):
        raise PkiError(
            f"the cluster CA expires on {issuer.cert.not_valid_after_utc:%Y-%m-%d}: it cannot "
            "issue host or jail CA certificates any more",
            hint="make a new cluster CA (`rex ca init --force` on the CA host) and join again",
        )
    return end


def _usage(*, ca: bool, rsa_key: bool = False) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True, content_commitment=False, key_encipherment=rsa_key and not ca,
        data_encipherment=False, key_agreement=False, key_cert_sign=ca, crl_sign=ca,
        encipher_only=False, decipher_only=False,
    )  # fmt: skip


def check_can_sign_ca(issuer: Ca) -> None:
    """The cluster CA must allow one CA (a jail CA) below it."""
    with contextlib.suppress(x509.ExtensionNotFound):
        bc = issuer.cert.extensions.get_extension_for_class(x509.BasicConstraints).value
        if bc.path_length is not None and bc.path_length < 1:
            raise PkiError(
                f"the cluster CA {issuer.cert.subject.rfc4514_string()} has "
                "pathLenConstraint 0: it cannot sign the per-host jail CAs",
                hint="make a new CA with `rex ca init --force` (rex makes roots with "
                "pathLenConstraint 1), or use an intermediate that allows one CA below it",
            )


def host_certificate(
    issuer: Ca, public_key: PublicKey, host: str, zone: str, address: Address, now: dt.datetime,
    days: int = HOST_DAYS,
) -> x509.Certificate:  # fmt: skip
    """A host's certificate: signed by the cluster CA's own key, with HOST_POLICY."""
    name = host_dns_name(host, zone)
    policy = x509.PolicyInformation(HOST_POLICY, None)
    sans: list[x509.GeneralName] = [x509.DNSName(name), x509.IPAddress(address)]
    usage = [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
    rsa_key = isinstance(public_key, rsa.RSAPublicKey)
    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .issuer_name(issuer.cert.subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(_not_after(issuer, now, days))
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_usage(ca=False, rsa_key=rsa_key), critical=True)
        .add_extension(x509.ExtendedKeyUsage(usage), critical=False)
        .add_extension(x509.CertificatePolicies([policy]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(authority_key_id(issuer.cert), critical=False)
        .sign(issuer.key, signing_hash(issuer.key))
    )


def jail_ca_constraints(
    subnet: Network, public: Sequence[Network] = ()
) -> tuple[list[Network], list[Network]]:
    """(permitted, excluded) address ranges of a host's jail CA: its jail subnet and
    declared public ranges; minus the host's own address in the subnet (the first
    one, config.Config.host_address), which no jail ever holds."""
    own = next(iter(subnet.hosts()))
    return [subnet, *public], [ipaddress.ip_network(str(own))]


def jail_ca_certificate(
    issuer: Ca, public_key: PublicKey, host: str, zone: str, permitted: Sequence[Network],
    excluded: Sequence[Network], now: dt.datetime, days: int = JAIL_CA_DAYS,
) -> x509.Certificate:  # fmt: skip
    """Host ``host``'s jail CA: it signs only leaves (pathLenConstraint 0), and
    only for the addresses of ``permitted`` and no name under host.<zone>."""
    check_can_sign_ca(issuer)
    # RFC 5280 4.2.1.10: conforming CAs MUST mark nameConstraints critical
    constraints = x509.NameConstraints(
        permitted_subtrees=[x509.IPAddress(n) for n in permitted],
        excluded_subtrees=[x509.DNSName(f"host.{zone}"), *(x509.IPAddress(n) for n in excluded)],
    )
    subject = x509.Name([
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "RexCarcer"),
        x509.NameAttribute(NameOID.COMMON_NAME, f"jails of {host_dns_name(host, zone)}"[:64]),
    ])  # fmt: skip
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer.cert.subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(_not_after(issuer, now, days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_usage(ca=True), critical=True)
        .add_extension(constraints, critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(authority_key_id(issuer.cert), critical=False)
        .sign(issuer.key, signing_hash(issuer.key))
    )


def _ext(cert: x509.Certificate, kind: type[Any]) -> Any:
    with contextlib.suppress(x509.ExtensionNotFound):
        return cert.extensions.get_extension_for_class(kind).value
    return None


def host_of(
    cert: x509.Certificate, issuer: x509.Certificate, zone: str, now: dt.datetime
) -> tuple[str, Address] | None:
    """(host, address) when ``cert`` is a host certificate of this cluster, else None.

    It must be signed by ``issuer`` (the cluster CA) itself, checked with the
    issuer's public key: a jail certificate is signed by a jail CA and fails
    here whatever it names. Then: valid now, not a CA, clientAuth, HOST_POLICY,
    and exactly one DNS name ``<host>.host.<zone>`` and one address."""
    if cert.issuer != issuer.subject:
        return None
    try:
        cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature):
        return None
    if not cert.not_valid_before_utc <= now < cert.not_valid_after_utc:
        return None
    bc, eku = _ext(cert, x509.BasicConstraints), _ext(cert, x509.ExtendedKeyUsage)
    policies = _ext(cert, x509.CertificatePolicies)
    if bc is None or bc.ca or eku is None or ExtendedKeyUsageOID.CLIENT_AUTH not in eku:
        return None
    if policies is None or HOST_POLICY not in {p.policy_identifier for p in policies}:
        return None
    sans = _ext(cert, x509.SubjectAlternativeName)
    if sans is None:
        return None
    names, ips = sans.get_values_for_type(x509.DNSName), sans.get_values_for_type(x509.IPAddress)
    suffix = f".host.{zone}"
    if len(names) != 1 or len(ips) != 1 or len(list(sans)) != 2 or not names[0].endswith(suffix):
        return None
    host = names[0][: -len(suffix)]
    if not host or "." in host:
        return None
    return host, ips[0]


def due(cert: x509.Certificate, now: dt.datetime) -> bool:
    """In the last third of its validity (or expired): time to renew."""
    start, end = cert.not_valid_before_utc, cert.not_valid_after_utc
    return now >= start + (end - start) * RENEW_FRACTION


# -- certificate signing requests ----------------------------------------------------


def csr_pem(key: SigningKey, common_name: str) -> str:
    """A PKCS#10 request: proof that the sender holds ``key``. The CA host takes
    only the public key from it; the names come from the cluster's records."""
    from cryptography.hazmat.primitives import serialization

    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name[:64])]))
        .sign(key, signing_hash(key))
    )
    return csr.public_bytes(serialization.Encoding.PEM).decode()


def csr_key(pem: str) -> PublicKey:
    """The public key of a request, after checking its self-signature."""
    try:
        csr = x509.load_pem_x509_csr(pem.encode())
        valid = csr.is_signature_valid
        key = csr.public_key()
    except (ValueError, TypeError, UnicodeError) as exc:
        raise PkiError(f"a malformed certificate request: {exc}") from exc
    if not valid:
        raise PkiError("a certificate request whose signature does not verify")
    if isinstance(key, ec.EllipticCurvePublicKey):
        if key.curve.name not in ("secp256r1", "secp384r1"):
            raise PkiError(f"a certificate request with an unsupported curve {key.curve.name}")
    elif not (isinstance(key, rsa.RSAPublicKey) and key.key_size >= 2048):
        raise PkiError("a certificate request must carry an ECDSA P-256/P-384 or RSA key")
    return key


# -- proof of possession for a renewal ---------------------------------------------


def sign_bytes(key: SigningKey, data: bytes) -> str:
    """A signature over ``data`` with a host's current key (base64): how a host asks
    for its next certificate without a token."""
    import base64

    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding

    if isinstance(key, ec.EllipticCurvePrivateKey):
        sig = key.sign(data, ec.ECDSA(hashes.SHA256()))
    elif isinstance(key, rsa.RSAPrivateKey):
        sig = key.sign(data, padding.PKCS1v15(), hashes.SHA256())
    else:
        raise PkiError(f"a {type(key).__name__} host key cannot sign a renewal")
    return base64.b64encode(sig).decode()


def signature_ok(cert: x509.Certificate, signature: str, data: bytes) -> bool:
    import base64
    import binascii

    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding

    try:
        sig = base64.b64decode(signature, validate=True)
        pub = cert.public_key()
        if isinstance(pub, ec.EllipticCurvePublicKey):
            pub.verify(sig, data, ec.ECDSA(hashes.SHA256()))
        elif isinstance(pub, rsa.RSAPublicKey):
            pub.verify(sig, data, padding.PKCS1v15(), hashes.SHA256())
        else:
            return False
    except (InvalidSignature, ValueError, binascii.Error, TypeError):
        return False
    return True
