"""The identity hook on the in-memory drivers: the jail lifecycle issues, keeps,
renews and revokes a jail's certificate, and writes it only inside the jail."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from rexcarcer.engine import jails
from rexcarcer.engine.base import Engine
from rexcarcer.errors import UnsafePath
from rexcarcer.logs.hook import LogHook
from rexcarcer.netpolicy import HostnameRefused
from rexcarcer.pki import PkiError, jailca, registry
from rexcarcer.pki.ca import load
from rexcarcer.pki.hook import IdentityHook, ensure_identity, issuer_id
from rexcarcer.pki.layout import CaPaths, JailCaPaths
from rexcarcer.rexfile.ast import Base, Proto, Rexfile, Run, Service
from rexcarcer.runtime.fake import FakeRuntime
from tests.unit.fakes import fake_engine


@pytest.fixture
def eng(tmp_path: Path) -> Engine:
    return fake_engine(tmp_path, [IdentityHook(), LogHook()])


def rexfile(tmp_path: Path, **kw: object) -> Rexfile:
    return Rexfile(base=Base("bb"), steps=(Run("true"),), path=tmp_path / "app.rex", **kw)  # type: ignore[arg-type]


def ssl(eng: Engine, name: str = "app") -> Path:
    return eng.host.storage.mountpoint(f"jails/{name}") / "etc/ssl/rc"


def leaf(eng: Engine, name: str = "app") -> x509.Certificate:
    return x509.load_pem_x509_certificates((ssl(eng, name) / "host.crt").read_bytes())[0]


def jail_issuer(eng: Engine) -> str:
    """What this host's jail certificates record as their issuer (the jail CA's key)."""
    return issuer_id(jailca.load(JailCaPaths.under(eng.host.config.root)))


def test_up_makes_a_ca_and_gives_the_jail_its_identity(eng: Engine, tmp_path: Path) -> None:
    svc = Service("renderer", 1234, Proto.TCP)
    jails.up(eng, rexfile(tmp_path, hostname="docs.example.com", services=(svc,)), "app")
    assert CaPaths.under(eng.host.config.root).exists()
    assert any("Creating the cluster CA" in m for m in eng.host.progress.messages)  # type: ignore[attr-defined]
    d = ssl(eng)
    assert (d / "host.key").stat().st_mode & 0o777 == 0o600
    assert (d / "host.crt").stat().st_mode & 0o777 == 0o644
    assert d.stat().st_mode & 0o777 == 0o755
    if os.geteuid() == 0:
        assert (d / "host.key").stat().st_uid == 0
    cert = leaf(eng)
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == [
        "app.jail.rex.internal",
        "docs.example.com",
        "renderer.svc.rex.internal",
    ]
    assert [str(ip) for ip in sans.get_values_for_type(x509.IPAddress)] == ["203.0.113.2"]
    authority = load(CaPaths.under(eng.host.config.root))
    assert (d / "cluster.crt").read_bytes() == authority.trust_pem()
    # signed by this host's jail CA, which the root signed; host.crt carries both
    jail_ca = jailca.load(JailCaPaths.under(eng.host.config.root))
    cert.verify_directly_issued_by(jail_ca.cert)
    jail_ca.cert.verify_directly_issued_by(authority.cert)
    chain = x509.load_pem_x509_certificates((d / "host.crt").read_bytes())
    assert chain == [cert, jail_ca.cert]
    bc = jail_ca.cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    assert bc.ca and bc.path_length == 0
    rec = registry.current(eng.host.store, "app")
    assert rec is not None and rec["serial"] == format(cert.serial_number, "x")
    assert "PRIVATE KEY" not in str(eng.host.store.list(""))  # the key lives only in the jail
    assert not list(eng.host.config.root.rglob("host.key"))


def test_restart_keeps_a_good_certificate(eng: Engine, tmp_path: Path) -> None:
    jails.up(eng, rexfile(tmp_path), "app")
    first = leaf(eng).serial_number
    jails.restart(eng, "app")
    assert leaf(eng).serial_number == first


def test_missing_or_replaced_files_are_reissued(eng: Engine, tmp_path: Path) -> None:
    jails.up(eng, rexfile(tmp_path), "app")
    first = leaf(eng).serial_number
    (ssl(eng) / "host.key").unlink()
    jails.restart(eng, "app")
    second = leaf(eng).serial_number
    assert second != first
    (ssl(eng) / "host.key").write_text("not a key")
    jails.restart(eng, "app")
    assert leaf(eng).serial_number != second
    revoked = {r.serial for r in registry.revoked(eng.host.store, jail_issuer(eng))}
    assert {first, second} <= revoked
    crl = x509.load_pem_x509_crl(JailCaPaths.under(eng.host.config.root).crl.read_bytes())
    assert crl.get_revoked_certificate_by_serial_number(first) is not None
    # signed by the jail CA, and published in the store for the other hosts
    assert crl.is_signature_valid(
        jailca.load(JailCaPaths.under(eng.host.config.root)).cert.public_key()  # type: ignore[arg-type]
    )
    published = eng.host.store.get("pki/crls/h1")
    assert published is not None and published.json()["pem"].encode() == crl.public_bytes(
        serialization.Encoding.PEM
    )


def test_a_certificate_in_its_last_third_is_renewed_at_start(eng: Engine, tmp_path: Path) -> None:
    jails.up(eng, rexfile(tmp_path), "app")
    first = leaf(eng).serial_number
    rec = registry.current(eng.host.store, "app")
    assert rec is not None
    for key in ("not_before", "not_after"):
        rec[key] -= 61 * 86400  # pretend 61 of its 90 days went by
    registry.record_issued(eng.host.store, "app", rec)
    jails.stop(eng, "app")
    jails.start(eng, "app")
    assert leaf(eng).serial_number != first
    assert any("last third" in m for m in eng.host.progress.messages)  # type: ignore[attr-defined]


def test_forced_renewal_and_destroy_revoke(eng: Engine, tmp_path: Path) -> None:
    jails.up(eng, rexfile(tmp_path), "app")
    first = leaf(eng).serial_number
    rec = jails.record(eng, "app")
    assert rec is not None
    why = ensure_identity(eng.host, rec, jails.spec_for(eng, rec), force=True)
    assert why == "renewal was asked for"
    second = leaf(eng).serial_number
    jails.destroy(eng, "app")
    assert registry.current(eng.host.store, "app") is None
    reasons = {r.serial: r.reason for r in registry.revoked(eng.host.store, jail_issuer(eng))}
    assert reasons == {first: "superseded", second: "cessationOfOperation"}


def test_a_failed_up_revokes_what_it_issued(eng: Engine, tmp_path: Path) -> None:
    runtime = eng.host.runtime
    assert isinstance(runtime, FakeRuntime)
    runtime.fail_start.add("app")
    with pytest.raises(Exception, match="failed to start"):
        jails.up(eng, rexfile(tmp_path), "app")
    reasons = [r.reason for r in registry.revoked(eng.host.store, jail_issuer(eng))]
    assert reasons == ["cessationOfOperation"]


def test_a_bad_hostname_fails_before_a_ca_is_made(eng: Engine, tmp_path: Path) -> None:
    # refused by the network policy's admission, before anything changes
    with pytest.raises(HostnameRefused, match="bad_name"):
        jails.up(eng, rexfile(tmp_path, hostname="bad_name.example.com"), "app")
    assert not CaPaths.under(eng.host.config.root).exists()
    assert jails.list_jails(eng) == []


def test_a_symlink_in_the_image_cannot_send_the_key_out(eng: Engine, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    rf = rexfile(tmp_path)
    jails.up(eng, rf, "app")
    root = eng.host.storage.mountpoint("jails/app")
    jails.stop(eng, "app")
    for p in (ssl(eng) / n for n in ("host.key", "host.crt", "cluster.crt")):
        p.unlink()
    ssl(eng).rmdir()
    # an absolute link is the jail's view: it lands inside the root
    (root / "etc/ssl/rc").symlink_to(str(outside))
    jails.start(eng, "app")
    assert list(outside.iterdir()) == []
    assert (root / str(outside).lstrip("/") / "host.key").exists()
    jails.stop(eng, "app")
    (root / "etc/ssl/rc").unlink()
    (root / "etc/ssl/rc").symlink_to("../../../../../../../../" + str(outside).lstrip("/"))
    with pytest.raises(UnsafePath):
        jails.start(eng, "app")
    assert list(outside.iterdir()) == []


def test_a_hard_link_in_the_jail_is_replaced_not_written_through(
    eng: Engine, tmp_path: Path
) -> None:
    jails.up(eng, rexfile(tmp_path), "app")
    root = eng.host.storage.mountpoint("jails/app")
    public = root / "public.txt"
    public.write_text("public\n")
    (ssl(eng) / "host.key").unlink()
    os.link(public, ssl(eng) / "host.key")
    jails.restart(eng, "app")
    assert public.read_text() == "public\n"
    assert b"PRIVATE KEY" in (ssl(eng) / "host.key").read_bytes()


def test_a_start_with_a_good_certificate_needs_no_cryptography(
    eng: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from rexcarcer.pki import hook

    jails.up(eng, rexfile(tmp_path), "app")
    first = leaf(eng).serial_number

    def no_ca(eng: Engine) -> None:
        raise AssertionError("the CA was loaded: cryptography would be imported")

    monkeypatch.setattr(hook, "ensure_issuer", no_ca)
    jails.restart(eng, "app")  # decided from the store, ca.json, a read and a stat
    monkeypatch.undo()
    key = ssl(eng) / "host.key"
    os.utime(key, ns=(1, 1))  # same key, different mtime: the full check, no new certificate
    jails.restart(eng, "app")
    assert leaf(eng).serial_number == first
    rec = registry.current(eng.host.store, "app")
    assert rec is not None and rec["key_file"][2] == 1  # noted: cheap again next time
    monkeypatch.setattr(hook, "ensure_issuer", no_ca)
    jails.restart(eng, "app")


@pytest.mark.parametrize(
    ("hostname", "why"),
    [("h1.host.rex.internal", "lies inside host.rex.internal"),
     ("host.rex.internal", "lies inside host.rex.internal"),
     ("renderer.svc.rex.internal", "lies inside svc.rex.internal"),
     ("other.jail.rex.internal", "only app.jail.rex.internal is this jail's own name")],
)  # fmt: skip
def test_up_refuses_a_hostname_rex_reserves_before_anything_changes(
    eng: Engine, tmp_path: Path, hostname: str, why: str
) -> None:
    from rexcarcer.dns import DnsError
    from rexcarcer.service.local import LocalService

    service = LocalService(lambda: eng)
    for verb in (service.plan, service.up):
        with pytest.raises(DnsError, match=why) as err:
            verb(rexfile(tmp_path, hostname=hostname), "app")
        assert "host.rex.internal, jail.rex.internal and svc.rex.internal" in (err.value.hint or "")
    assert jails.list_jails(eng) == [] and eng.host.store.list("") == []
    assert not CaPaths.under(eng.host.config.root).exists()
    assert eng.host.storage.datasets("images") == [] and not eng.host.storage.exists("jails/app")
    # the jail's own canonical name is fine
    service.up(rexfile(tmp_path, hostname="app.jail.rex.internal"), "app")


def test_a_replaced_ca_makes_a_new_jail_ca_and_new_certificates(
    eng: Engine, tmp_path: Path
) -> None:
    from rexcarcer.pki import ca

    jails.up(eng, rexfile(tmp_path), "app")
    first, jail_ca = leaf(eng).serial_number, JailCaPaths.under(eng.host.config.root).key_id()
    now = ca.utcnow()
    ca.install(CaPaths.under(eng.host.config.root), ca.self_signed(ca.CaSettings(), now),
               now=now, force=True)  # fmt: skip
    jails.restart(eng, "app")
    assert leaf(eng).serial_number != first
    assert JailCaPaths.under(eng.host.config.root).key_id() != jail_ca
    root = load(CaPaths.under(eng.host.config.root))
    jailca.load(JailCaPaths.under(eng.host.config.root)).cert.verify_directly_issued_by(root.cert)


def test_an_address_outside_the_jail_cas_ranges_is_refused_with_a_hint(
    eng: Engine, tmp_path: Path
) -> None:
    import ipaddress

    # the network policy refuses such an IP at `rex up` (exit 46); the jail CA
    # refuses to certify it all the same, should a record carry it
    jails.up(eng, rexfile(tmp_path), "app")
    rec = jails.record(eng, "app")
    assert rec is not None
    rec = rec.replace(address=ipaddress.ip_interface("192.0.2.7/24"))
    with pytest.raises(PkiError, match=r"192.0.2.7 is not one this host's jail CA may certify"):
        ensure_identity(eng.host, rec, jails.spec_for(eng, rec), force=True)


def test_a_public_range_declared_later_is_added_to_the_jail_ca(eng: Engine, tmp_path: Path) -> None:
    """public_ips and the jail CA's name constraints are one list: a range
    declared after the jail CA was made gets a new jail CA that covers it."""
    import dataclasses
    import ipaddress

    from rexcarcer.config import PublicRange

    jails.up(eng, rexfile(tmp_path), "app")
    paths = JailCaPaths.under(eng.host.config.root)
    before = paths.key_id()
    public = ipaddress.ip_network("198.51.100.16/28")
    eng.host.config = dataclasses.replace(
        eng.host.config, public_ips=(PublicRange(public, "eth9"),)
    )
    (tmp_path / "pub").mkdir()
    jails.up(eng, rexfile(tmp_path / "pub", ip=ipaddress.ip_interface("198.51.100.18/28")), "pub")
    assert paths.key_id() != before
    assert public in jailca.public_ranges(paths)
    san = leaf(eng, "pub").extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert ipaddress.ip_address("198.51.100.18") in san.value.get_values_for_type(x509.IPAddress)
