"""The cluster CA, jail certificates, the registry and the CRL; pure, no root.

Certificates are checked with cryptography's own path validator (the
``x509.verification`` API), an implementation independent of how rex builds
them; the integration tests check them again with the openssl command."""

from __future__ import annotations

import datetime as dt
import ipaddress
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509 import verification
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from rexcarcer.doctor import time_keepers
from rexcarcer.errors import Conflict, NotFound
from rexcarcer.model.jail import JailRecord
from rexcarcer.pki import PkiError, ca, crl, identity, issue, registry
from rexcarcer.pki.keys import KeyType, fingerprint, load_private_key, signing_hash, spki_sha256
from rexcarcer.pki.layout import CaPaths
from rexcarcer.state.memory import MemoryStore

NOW = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.UTC)
REC: dict[str, Any] = {
    "name": "web1", "hostname": "docs.example.com", "address": "203.0.113.12/24",
    "services": [{"name": "renderer", "port": 1234, "proto": "tcp"}],
}  # fmt: skip


# -- helpers: a user's PKI, made the way another tool would --------------------------


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def make_cert(
    cn: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: tuple[x509.Name, ec.EllipticCurvePrivateKey] | None = None,
    *,
    is_ca: bool = True,
    usage: bool = True,
    days: int = 365,
    start: dt.datetime = NOW - dt.timedelta(days=1),
) -> x509.Certificate:
    iname, ikey = issuer or (_name(cn), key)
    b = (
        x509.CertificateBuilder().subject_name(_name(cn)).issuer_name(iname)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(start).not_valid_after(start + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=is_ca, path_length=None), critical=True)
    )  # fmt: skip
    if usage:
        b = b.add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=is_ca,
                crl_sign=is_ca,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
    return b.sign(ikey, hashes.SHA256())


def pem(*certs: x509.Certificate) -> bytes:
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)


def key_bytes(key: ec.EllipticCurvePrivateKey, password: bytes | None = None) -> bytes:
    enc: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(password)
        if password
        else serialization.NoEncryption()
    )
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, enc)


@pytest.fixture
def user_pki(tmp_path: Path) -> dict[str, Any]:
    """A root and an intermediate, with files as a user would hand them to rex."""
    root_key, int_key = (
        ec.generate_private_key(ec.SECP256R1()),
        ec.generate_private_key(ec.SECP384R1()),
    )
    root = make_cert("Acme Root", root_key, days=3650)
    inter = make_cert("Acme Jails", int_key, (root.subject, root_key))
    (tmp_path / "int.pem").write_bytes(pem(inter))
    (tmp_path / "bundle.pem").write_bytes(pem(inter, root))
    (tmp_path / "root.pem").write_bytes(pem(root))
    (tmp_path / "int.key").write_bytes(key_bytes(int_key))
    return {"root": root, "root_key": root_key, "inter": inter, "int_key": int_key, "dir": tmp_path}


def verify_server(
    trust: list[x509.Certificate], chain_pem: bytes, name: str, when: dt.datetime = NOW
) -> None:
    leaf, *inter = x509.load_pem_x509_certificates(chain_pem)
    store = verification.Store(trust)
    verifier = (
        verification.PolicyBuilder()
        .store(store)
        .time(when)
        .build_server_verifier(
            x509.DNSName(name)
            if not name[0].isdigit()
            else x509.IPAddress(ipaddress.ip_address(name))
        )
    )
    verifier.verify(leaf, inter)


def verify_client(trust: list[x509.Certificate], chain_pem: bytes) -> None:
    leaf, *inter = x509.load_pem_x509_certificates(chain_pem)
    verifier = verification.PolicyBuilder().store(verification.Store(trust)).time(NOW)
    verifier.build_client_verifier().verify(leaf, inter)


# -- the CA ----------------------------------------------------------------------------


def test_self_signed_ca_is_a_p256_root_that_signs_one_level_of_cas() -> None:
    authority = ca.self_signed(ca.CaSettings(name="Test CA", days=10), NOW)
    cert = authority.cert
    assert isinstance(authority.key, ec.EllipticCurvePrivateKey)
    assert authority.key.curve.name == "secp256r1"
    bc = cert.extensions.get_extension_for_class(x509.BasicConstraints)
    assert bc.critical and bc.value.ca and bc.value.path_length == 1  # hosts' jail CAs
    ku = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    assert ku.key_cert_sign and ku.crl_sign
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "Test CA"
    assert cert.not_valid_after_utc == NOW + dt.timedelta(days=10)
    assert ca.is_self_signed(cert) and authority.trust == (cert,)
    assert authority.chain_pem() == b""  # host.crt: the leaf alone under rex's own root


@pytest.mark.parametrize("kind", list(KeyType))
def test_every_key_type_makes_a_working_ca(kind: KeyType) -> None:
    authority = ca.self_signed(ca.CaSettings(key_type=kind), NOW)
    got = issue.issue(
        authority, identity.identity_for(JailRecord.from_json(REC), "rex.internal"), NOW
    )
    verify_server(list(authority.trust), got.host_crt, "web1.jail.rex.internal")


@pytest.mark.parametrize(
    ("settings", "message"),
    [(ca.CaSettings(name=""), "bad CA name"), (ca.CaSettings(days=0), "bad CA validity"),
     (ca.CaSettings(leaf_days=0), "jail certificate validity")],
)  # fmt: skip
def test_bad_ca_settings_are_refused(settings: ca.CaSettings, message: str) -> None:
    with pytest.raises(PkiError, match=message):
        ca.self_signed(settings, NOW)


def test_install_writes_the_key_0600_and_refuses_to_overwrite(tmp_path: Path) -> None:
    paths = CaPaths.under(tmp_path)
    authority = ca.self_signed(ca.CaSettings(), NOW)
    assert ca.install(paths, authority, now=NOW) is None
    assert paths.key.stat().st_mode & 0o777 == 0o600
    assert paths.dir.stat().st_mode & 0o777 == 0o700
    loaded = ca.load(paths)
    assert loaded.fingerprint == authority.fingerprint and loaded.leaf_days == 90
    with pytest.raises(Conflict, match="already exists"):
        ca.install(paths, ca.self_signed(ca.CaSettings(), NOW), now=NOW)
    kept = ca.install(paths, ca.self_signed(ca.CaSettings(), NOW), now=NOW, force=True)
    assert kept is not None and (kept / "ca.key").exists()
    assert ca.load(paths).fingerprint != authority.fingerprint
    assert [p.name for p in tmp_path.iterdir() if ".new-" in p.name] == []


def test_load_without_a_ca_says_how_to_make_one(tmp_path: Path) -> None:
    with pytest.raises(NotFound) as err:
        ca.load(CaPaths.under(tmp_path))
    assert err.value.hint == "create one with `rex ca init`"


def test_describe_has_subject_fingerprint_and_validity(tmp_path: Path) -> None:
    paths = CaPaths.under(tmp_path)
    authority = ca.self_signed(ca.CaSettings(), NOW)
    info = ca.describe(paths, authority)
    assert info["subject"] == "CN=RexCarcer CA,O=RexCarcer"
    assert info["fingerprint_sha256"] == authority.cert.fingerprint(hashes.SHA256()).hex()
    assert info["not_after"].startswith("2036-02-27")
    assert info["key"] == "ECDSA secp256r1"


# -- a user-supplied intermediate -----------------------------------------------------------


def test_intermediate_chains_jail_certificates_to_the_users_root(user_pki: dict[str, Any]) -> None:
    d = user_pki["dir"]
    authority = ca.intermediate(d / "bundle.pem", d / "int.key", None, 30, NOW)
    assert authority.mode == "intermediate" and authority.trust == (user_pki["root"],)
    got = issue.issue(
        authority, identity.identity_for(JailRecord.from_json(REC), "rex.internal"), NOW
    )
    assert len(x509.load_pem_x509_certificates(got.host_crt)) == 2  # leaf + intermediate
    assert got.cluster_crt == pem(user_pki["root"])
    verify_server([user_pki["root"]], got.host_crt, "docs.example.com")
    assert got.cert.not_valid_after_utc == NOW + dt.timedelta(days=30)
    assert signing_hash(authority.key).name == "sha384"  # P-384 intermediate


def test_intermediate_chain_may_come_from_a_separate_file(user_pki: dict[str, Any]) -> None:
    d = user_pki["dir"]
    authority = ca.intermediate(d / "int.pem", d / "int.key", d / "root.pem", 90, NOW)
    assert authority.trust == (user_pki["root"],)


def _refused(user_pki: dict[str, Any], cert: str, key: str, chain: str | None, match: str) -> None:
    d = user_pki["dir"]
    paths = CaPaths.under(d / "state")
    with pytest.raises(PkiError, match=match):
        authority = ca.intermediate(d / cert, d / key, d / chain if chain else None, 90, NOW)
        ca.install(paths, authority, now=NOW)
    assert not (d / "state").exists()  # nothing written


def test_a_key_that_does_not_match_is_refused(user_pki: dict[str, Any]) -> None:
    other = ec.generate_private_key(ec.SECP256R1())
    (user_pki["dir"] / "other.key").write_bytes(key_bytes(other))
    _refused(user_pki, "bundle.pem", "other.key", None, "does not belong to the certificate")


def test_an_intermediate_that_is_not_a_ca_is_refused(user_pki: dict[str, Any]) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = make_cert("not a ca", key, (user_pki["root"].subject, user_pki["root_key"]), is_ca=False)
    (user_pki["dir"] / "leaf.pem").write_bytes(pem(leaf, user_pki["root"]))
    (user_pki["dir"] / "leaf.key").write_bytes(key_bytes(key))
    _refused(user_pki, "leaf.pem", "leaf.key", None, "is not a CA certificate")


def test_a_ca_without_cert_signing_usage_is_refused(user_pki: dict[str, Any]) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    cert = make_cert("x", key, (user_pki["root"].subject, user_pki["root_key"]))
    b = x509.CertificateBuilder().subject_name(cert.subject).issuer_name(cert.issuer)
    b = b.public_key(key.public_key()).serial_number(1).not_valid_before(NOW - dt.timedelta(1))
    b = (
        b.not_valid_after(NOW + dt.timedelta(9))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(True, False, False, False, False, False, False, False, False),
            critical=True,
        )
    )
    (user_pki["dir"] / "nosign.pem").write_bytes(
        pem(b.sign(user_pki["root_key"], hashes.SHA256()), user_pki["root"])
    )
    (user_pki["dir"] / "nosign.key").write_bytes(key_bytes(key))
    _refused(user_pki, "nosign.pem", "nosign.key", None, "may not sign certificates")


def test_unreadable_encrypted_and_garbage_keys_are_refused(user_pki: dict[str, Any]) -> None:
    d = user_pki["dir"]
    _refused(user_pki, "bundle.pem", "missing.key", None, "cannot read the key")
    (d / "adir.key").mkdir()
    _refused(user_pki, "bundle.pem", "adir.key", None, "cannot read the key")
    (d / "enc.key").write_bytes(key_bytes(user_pki["int_key"], b"secret"))
    _refused(user_pki, "bundle.pem", "enc.key", None, "is encrypted")
    (d / "junk.key").write_text("-----BEGIN PRIVATE KEY-----\nnope\n-----END PRIVATE KEY-----\n")
    _refused(user_pki, "bundle.pem", "junk.key", None, "not a private key")
    (d / "junk.pem").write_text("hello")
    _refused(user_pki, "junk.pem", "int.key", None, "not a certificate")


def test_a_chain_that_does_not_reach_a_root_is_refused(user_pki: dict[str, Any]) -> None:
    _refused(user_pki, "int.pem", "int.key", None, "which is not a root")
    stranger = make_cert("Other Root", ec.generate_private_key(ec.SECP256R1()))
    (user_pki["dir"] / "wrong.pem").write_bytes(pem(stranger))
    _refused(user_pki, "int.pem", "int.key", "wrong.pem", "the chain is broken")


def test_a_root_whose_path_length_forbids_the_intermediate_is_refused(tmp_path: Path) -> None:
    root_key, int_key = (
        ec.generate_private_key(ec.SECP256R1()),
        ec.generate_private_key(ec.SECP256R1()),
    )
    name = _name("Strict Root")
    b = x509.CertificateBuilder().subject_name(name).issuer_name(name)
    b = b.public_key(root_key.public_key()).serial_number(1)
    b = b.not_valid_before(NOW - dt.timedelta(1)).not_valid_after(NOW + dt.timedelta(9))
    root = b.add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True).sign(
        root_key, hashes.SHA256()
    )
    inter = make_cert("Too deep", int_key, (root.subject, root_key))
    (tmp_path / "deep.pem").write_bytes(pem(inter, root))
    (tmp_path / "deep.key").write_bytes(key_bytes(int_key))
    with pytest.raises(PkiError, match="allows 0 CA certificate"):
        ca.intermediate(tmp_path / "deep.pem", tmp_path / "deep.key", None, 90, NOW)


def test_an_expired_intermediate_is_refused(user_pki: dict[str, Any]) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    old = make_cert(
        "Old",
        key,
        (user_pki["root"].subject, user_pki["root_key"]),
        start=NOW - dt.timedelta(days=400),
    )
    (user_pki["dir"] / "old.pem").write_bytes(pem(old, user_pki["root"]))
    (user_pki["dir"] / "old.key").write_bytes(key_bytes(key))
    _refused(user_pki, "old.pem", "old.key", None, "is not valid now")


def test_der_keys_load_and_ed25519_signs_without_a_digest(tmp_path: Path) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    der = key.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    (tmp_path / "k.der").write_bytes(der)
    assert spki_sha256(load_private_key(tmp_path / "k.der")) == spki_sha256(key)
    assert signing_hash(ed25519.Ed25519PrivateKey.generate()) is None


# -- jail certificates -------------------------------------------------------------------


def test_identity_names_are_the_jail_hostname_services_and_address() -> None:
    ident = identity.identity_for(JailRecord.from_json(REC), "rex.internal")
    assert ident.names == (
        "web1.jail.rex.internal",
        "docs.example.com",
        "renderer.svc.rex.internal",
    )
    assert ident.ips == (ipaddress.ip_address("203.0.113.12"),)
    plain = identity.identity_for(
        JailRecord.from_json({"name": "db", "hostname": "db.jail.rex.internal"}), "rex.internal"
    )
    assert plain.names == ("db.jail.rex.internal",) and plain.ips == ()


@pytest.mark.parametrize(
    ("hostname", "why"),
    [("bad_name.example.com", "contains '_'"), ("a..b", "empty label"),
     ("-x.example.com", "starts or ends with '-'"), ("x" * 64 + ".com", "the limit is 63"),
     ("é.example", "not ASCII"), ("*.example.com", "contains '\\*'"),
     ("a" * 250 + ".com", "the limit is 253")],
)  # fmt: skip
def test_names_that_cannot_be_sans_are_refused(hostname: str, why: str) -> None:
    with pytest.raises(PkiError, match=why):
        identity.identity_for(JailRecord.from_json({**REC, "hostname": hostname}), "rex.internal")


def test_leaf_is_a_tls_server_and_client_certificate() -> None:
    authority = ca.self_signed(ca.CaSettings(), NOW)
    got = issue.issue(
        authority, identity.identity_for(JailRecord.from_json(REC), "rex.internal"), NOW
    )
    cert = got.cert
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == [
        "web1.jail.rex.internal",
        "docs.example.com",
        "renderer.svc.rex.internal",
    ]
    assert sans.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("203.0.113.12")]
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    ku = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    assert ku.digital_signature and not ku.key_cert_sign
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert set(eku) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
    assert cert.not_valid_after_utc == NOW + dt.timedelta(days=90)
    key = serialization.load_pem_private_key(got.key_pem, None)
    assert spki_sha256(key) == spki_sha256(cert.public_key())  # type: ignore[arg-type]
    for name in (
        "web1.jail.rex.internal",
        "docs.example.com",
        "renderer.svc.rex.internal",
        "203.0.113.12",
    ):
        verify_server(list(authority.trust), got.host_crt, name)
    verify_client(list(authority.trust), got.host_crt)
    with pytest.raises(verification.VerificationError):
        verify_server(list(authority.trust), got.host_crt, "other.jail.rex.internal")
    stranger = ca.self_signed(ca.CaSettings(), NOW)
    with pytest.raises(verification.VerificationError):
        verify_server(list(stranger.trust), got.host_crt, "web1.jail.rex.internal")


def test_leaf_never_outlives_its_ca_and_a_dying_ca_refuses() -> None:
    authority = ca.self_signed(ca.CaSettings(days=30), NOW)
    got = issue.issue(
        authority, identity.identity_for(JailRecord.from_json(REC), "rex.internal"), NOW
    )
    assert got.cert.not_valid_after_utc == authority.cert.not_valid_after_utc
    with pytest.raises(PkiError, match="cannot issue jail certificates any more"):
        issue.issue(
            authority,
            identity.identity_for(JailRecord.from_json(REC), "rex.internal"),
            NOW + dt.timedelta(days=30),
        )


def test_renewal_reasons() -> None:
    ident = identity.identity_for(JailRecord.from_json(REC), "rex.internal")
    start = int(NOW.timestamp())
    stored = {
        "issuer": "ca1",
        "identity": ident.as_json(),
        "not_before": start,
        "not_after": start + 90 * 86400,
    }
    good = identity.OnDisk(True, True)
    assert identity.renewal_reason(None, ident, "ca1", good, NOW) == "it has no certificate yet"
    assert identity.renewal_reason(stored, ident, "ca1", good, NOW) is None
    assert identity.renewal_reason(stored, ident, "ca2", good, NOW) == "the cluster CA changed"
    moved = identity.identity_for(
        JailRecord.from_json({**REC, "address": "203.0.113.13/24"}), "rex.internal"
    )
    assert (
        identity.renewal_reason(stored, moved, "ca1", good, NOW) == "its names or addresses changed"
    )
    assert "missing or was replaced" in str(
        identity.renewal_reason(stored, ident, "ca1", identity.OnDisk(False, True), NOW)
    )
    assert "does not match" in str(
        identity.renewal_reason(stored, ident, "ca1", identity.OnDisk(True, False), NOW)
    )
    assert identity.renewal_reason(stored, ident, "ca1", good, NOW + dt.timedelta(days=59)) is None
    late = identity.renewal_reason(stored, ident, "ca1", good, NOW + dt.timedelta(days=60))
    assert late is not None and "last third" in late


# -- registry and CRL -------------------------------------------------------------------------


def _rec(serial: str, not_after: int = 2_000_000_000, issuer: str = "ca1") -> dict[str, Any]:
    return {"jail": "web1", "serial": serial, "issuer": issuer, "not_after": not_after}


def test_renewal_supersedes_and_destroy_revokes() -> None:
    store = MemoryStore()
    assert registry.record_issued(store, "web1", _rec("0a"), now=100) is None
    assert registry.record_issued(store, "web1", _rec("0a"), now=100) is None  # same: no-op
    assert registry.record_issued(store, "web1", _rec("0b"), now=200) == "0a"
    assert registry.current(store, "web1") == _rec("0b")
    assert registry.revoke(store, "web1", "cessationOfOperation", now=300) == "0b"
    assert registry.revoke(store, "web1", "cessationOfOperation", now=300) is None
    revoked = {r.serial: r for r in registry.revoked(store, "ca1", now=400)}
    assert revoked[0x0A].reason == "superseded" and revoked[0x0A].revoked_at == 200
    assert revoked[0x0B].reason == "cessationOfOperation"
    assert registry.current(store, "web1") is None
    assert registry.revoked(store, "ca2", now=400) == []
    assert registry.revoked(store, "ca1", now=2_000_000_001) == []  # expired: off the CRL


def test_crl_lists_revoked_serials_with_reasons_and_verifies(tmp_path: Path) -> None:
    authority = ca.self_signed(ca.CaSettings(), NOW)
    entries = [
        registry.Revoked(0xA, "web1", "superseded", int(NOW.timestamp()), 2**31, "x"),
        registry.Revoked(0xB, "web2", "cessationOfOperation", 1, 2**31, "x"),
    ]
    built = crl.build(authority, entries, NOW)
    assert built.is_signature_valid(authority.cert.public_key())  # type: ignore[arg-type]
    assert built.next_update_utc == NOW + dt.timedelta(days=7)
    got = {
        r.serial_number: r.extensions.get_extension_for_class(x509.CRLReason).value.reason
        for r in built
    }
    assert got == {0xA: x509.ReasonFlags.superseded, 0xB: x509.ReasonFlags.cessation_of_operation}
    paths = CaPaths.under(tmp_path)
    paths.dir.mkdir()
    crl.write(paths.crl, crl.pem(built))
    assert x509.load_pem_x509_crl(paths.crl.read_bytes()) == built


def test_fingerprint_is_lowercase_hex_without_colons() -> None:
    cert = ca.self_signed(ca.CaSettings(), NOW).cert
    assert fingerprint(cert) == cert.fingerprint(hashes.SHA256()).hex()
    assert len(fingerprint(cert)) == 64 and ":" not in fingerprint(cert)


# -- rex doctor: time ---------------------------------------------------------------------------


def test_time_keepers_from_ps_output() -> None:
    ps = "systemd\n/usr/sbin/chronyd\nsshd\nsystemd-timesyn\nbash\n"
    assert time_keepers(ps) == ["chronyd", "systemd-timesyn"]
    assert time_keepers("init\nntpd\n") == ["ntpd"]
    assert time_keepers("init\nsh\n") == []


def test_doctor_time_check_uses_ps() -> None:
    from rexcarcer.doctor import _time
    from rexcarcer.run import ScriptedRunner

    runner = ScriptedRunner()
    runner.on(["ps", "-A", "-o", "comm="], "init\nntpd\n")
    assert _time(runner).ok and "ntpd" in _time(runner).detail
    bare = ScriptedRunner()
    bare.on(["ps"], "init\n")
    check = _time(bare)
    assert not check.ok and "certificates depend on it" in check.detail
