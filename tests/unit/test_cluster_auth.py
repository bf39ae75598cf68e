"""Roles that cannot be forged: ``authorize`` serves only a host certificate
(signed by the cluster CA itself, with the host-role policy, for a registered
host at its address, not revoked); a jail's certificate is refused whatever it
names, and the jail CA's name constraints make verifiers refuse it too."""

from __future__ import annotations

import datetime as dt
import ipaddress
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509 import verification
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from rexcarcer.cluster import membership, tls
from rexcarcer.cluster.auth import authorize
from rexcarcer.model.jail import JailRecord
from rexcarcer.pki import PkiError, ca, identity, issue, jailca, roles
from rexcarcer.pki.layout import CaPaths, JailCaPaths
from rexcarcer.state.memory import MemoryStore
from tests.unit import cluster_pki as bed

ZONE = bed.ZONE


def der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


def host_cert(cfg: object) -> x509.Certificate:
    files = tls.TlsFiles.under(cfg.root)  # type: ignore[attr-defined]
    return x509.load_pem_x509_certificates(files.cert.read_bytes())[0]


def forged_leaf(
    signer: ca.Ca, *, name: str, ip: str, policy: bool = True, issuer: x509.Name | None = None
) -> x509.Certificate:
    """What an attacker holding ``signer``'s key could make: every host-looking field."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    b = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .issuer_name(issuer or signer.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(
            [x509.DNSName(name), x509.IPAddress(ipaddress.ip_address(ip))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage(
            [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .add_extension(ca.authority_key_id(signer.cert), critical=False)
    )  # fmt: skip
    if policy:
        b = b.add_extension(
            x509.CertificatePolicies([x509.PolicyInformation(roles.HOST_POLICY, None)]),
            critical=False,
        )
    return b.sign(signer.key, hashes.SHA256())


@pytest.fixture
def bed_(tmp_path: Path) -> tuple[MemoryStore, object]:
    return bed.cluster(tmp_path)


def test_a_host_certificate_is_its_hosts(bed_: tuple[MemoryStore, object], tmp_path: Path) -> None:
    store, h1 = bed_
    cert = host_cert(h1)
    assert authorize(der(cert), store, ZONE) == "h1"
    policies = cert.extensions.get_extension_for_class(x509.CertificatePolicies).value
    assert [p.policy_identifier.dotted_string for p in policies] == [
        "2.25.288200484560246722413943436687405552071"
    ]
    h2 = bed.join(store, h1, tmp_path, "h2")  # signed by the CA host for a token
    assert authorize(der(host_cert(h2)), store, ZONE) == "h2"
    assert authorize(None, store, ZONE) is None and authorize(b"junk", store, ZONE) is None


def test_a_jail_certificate_with_a_hosts_name_and_address_is_refused(
    bed_: tuple[MemoryStore, object],
) -> None:
    """Even with everything a host certificate says, policy OID included: a jail
    CA signed it, not the cluster CA."""
    store, h1 = bed_
    jail_ca = jailca.load(JailCaPaths.under(h1.root))  # type: ignore[attr-defined]
    forged = forged_leaf(jail_ca, name="h1.host.rex.internal", ip="198.51.100.11")
    assert authorize(der(forged), store, ZONE) is None
    # and every verifier refuses its chain: the jail CA may not name host.<zone>
    # nor any address outside its host's jail subnet
    root = ca.load(CaPaths.under(h1.root))  # type: ignore[attr-defined]
    verifier = verification.PolicyBuilder().store(verification.Store(list(root.trust)))
    for name, ip in [("h1.host.rex.internal", "203.0.113.5"),
                     ("web.jail.rex.internal", "198.51.100.11")]:  # fmt: skip
        leaf = forged_leaf(jail_ca, name=name, ip=ip, policy=False)
        with pytest.raises(verification.VerificationError, match="constraint"):
            verifier.build_client_verifier().verify(leaf, [jail_ca.cert])
    with pytest.raises(verification.VerificationError, match="constraint"):
        verifier.build_client_verifier().verify(forged, [jail_ca.cert])
    good = forged_leaf(jail_ca, name="web.jail.rex.internal", ip="203.0.113.5", policy=False)
    verifier.build_client_verifier().verify(good, [jail_ca.cert])  # the control
    # a real jail certificate from the same jail CA verifies (the chain is sound)
    rec = JailRecord.from_json({"name": "web", "address": "203.0.113.5/26"})
    jail = issue.issue(jail_ca, identity.identity_for(rec, ZONE), dt.datetime.now(dt.UTC))
    leaf, *chain = x509.load_pem_x509_certificates(jail.host_crt)
    verifier.build_client_verifier().verify(leaf, chain)
    assert authorize(der(leaf), store, ZONE) is None


def test_rex_never_issues_a_jail_a_hosts_name_or_address(
    bed_: tuple[MemoryStore, object],
) -> None:
    _store, h1 = bed_
    jail_ca = jailca.load(JailCaPaths.under(h1.root))  # type: ignore[attr-defined]
    hostile = JailRecord.from_json({"name": "evil", "hostname": "h1.host.rex.internal",
                                    "address": "203.0.113.5/26"})  # fmt: skip
    with pytest.raises(PkiError, match=r"lies inside host.rex.internal"):
        identity.identity_for(hostile, ZONE)
    for ip in ("198.51.100.11", "203.0.113.1", "203.0.113.70"):  # a host, h1's bridge, h2's
        ident = identity.Identity("evil", ("evil.jail.rex.internal",),
                                  (ipaddress.ip_address(ip),))  # fmt: skip
        with pytest.raises(PkiError, match="not one this host's jail CA may certify"):
            issue.issue(jail_ca, ident, dt.datetime.now(dt.UTC))
    bad = identity.Identity("evil", ("h2.host.rex.internal",), ())
    with pytest.raises(PkiError, match="a name jails may not have"):
        issue.issue(jail_ca, bad, dt.datetime.now(dt.UTC))


def test_certificates_the_roles_do_not_allow_are_refused(
    bed_: tuple[MemoryStore, object], tmp_path: Path
) -> None:
    store, h1 = bed_
    root = ca.load(CaPaths.under(h1.root))  # type: ignore[attr-defined]
    good = dict(name="h1.host.rex.internal", ip="198.51.100.11")
    assert authorize(der(forged_leaf(root, **good)), store, ZONE) == "h1"  # the control
    # no host-role policy: even the cluster CA's signature is not enough
    assert authorize(der(forged_leaf(root, **good, policy=False)), store, ZONE) is None
    # another address, another host's name, an unregistered host
    assert authorize(der(forged_leaf(root, name="h1.host.rex.internal", ip="198.51.100.99")),
                     store, ZONE) is None  # fmt: skip
    assert authorize(der(forged_leaf(root, name="h2.host.rex.internal", ip="198.51.100.11")),
                     store, ZONE) is None  # fmt: skip
    # a rogue root with the very same name as the cluster's: the signature tells
    rogue = ca.self_signed(ca.CaSettings(), ca.utcnow())
    assert rogue.cert.subject == root.cert.subject
    assert authorize(der(forged_leaf(rogue, **good)), store, ZONE) is None


def test_a_revoked_or_left_hosts_certificate_is_refused_at_once(
    bed_: tuple[MemoryStore, object], tmp_path: Path
) -> None:
    store, h1 = bed_
    h2 = bed.join(store, h1, tmp_path, "h2")
    cert = host_cert(h2)
    assert authorize(der(cert), store, ZONE) == "h2"
    membership.leave(store, "h2")
    assert authorize(der(cert), store, ZONE) is None
    revoked = store.get(f"pki/revoked/{cert.serial_number:x}")
    assert revoked is not None and revoked.json()["kind"] == "host"
    # back with a new token: the new certificate is served, the old one never again
    h2 = bed.join(store, h1, tmp_path, "h2")
    assert authorize(der(host_cert(h2)), store, ZONE) == "h2"
    assert authorize(der(cert), store, ZONE) is None


def test_an_intermediate_that_allows_no_ca_below_is_refused(tmp_path: Path) -> None:
    """The jail CAs sit one level below the cluster CA: pathLenConstraint 0 forbids them."""
    root = ca.self_signed(ca.CaSettings(), ca.utcnow())
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    inter = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "i")]))
        .issuer_name(root.cert.subject).public_key(key.public_key()).serial_number(2)
        .not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=9))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(root.key, hashes.SHA256())
    )  # fmt: skip
    pem = serialization.Encoding.PEM
    (tmp_path / "i.pem").write_bytes(inter.public_bytes(pem) + root.cert.public_bytes(pem))
    (tmp_path / "i.key").write_bytes(key.private_bytes(
        pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))  # fmt: skip
    with pytest.raises(PkiError, match="allows 0 CA certificate"):
        ca.intermediate(tmp_path / "i.pem", tmp_path / "i.key", None, 90, now)
