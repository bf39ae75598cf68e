"""The identity hook on the in-memory drivers: the jail lifecycle issues, keeps,
renews and revokes a jail's certificate, and writes it only inside the jail."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from cryptography import x509

from rexcarcer.engine import jails
from rexcarcer.engine.host import Host
from rexcarcer.errors import UnsafePath
from rexcarcer.logs.hook import LogHook
from rexcarcer.pki import PkiError, registry
from rexcarcer.pki.ca import load
from rexcarcer.pki.hook import IdentityHook, ensure_identity
from rexcarcer.pki.layout import CaPaths
from rexcarcer.rexfile.ast import Base, Proto, Rexfile, Run, Service
from rexcarcer.runtime.fake import FakeRuntime
from tests.unit.fakes import fake_host


@pytest.fixture
def host(tmp_path: Path) -> Host:
    return fake_host(tmp_path, [IdentityHook(), LogHook()])


def rexfile(tmp_path: Path, **kw: object) -> Rexfile:
    return Rexfile(base=Base("bb"), steps=(Run("true"),), path=tmp_path / "app.rex", **kw)  # type: ignore[arg-type]


def ssl(host: Host, name: str = "app") -> Path:
    return host.storage.mountpoint(f"jails/{name}") / "etc/ssl/rc"


def leaf(host: Host, name: str = "app") -> x509.Certificate:
    return x509.load_pem_x509_certificates((ssl(host, name) / "host.crt").read_bytes())[0]


def test_up_makes_a_ca_and_gives_the_jail_its_identity(host: Host, tmp_path: Path) -> None:
    svc = Service("renderer", 1234, Proto.TCP)
    jails.up(host, rexfile(tmp_path, hostname="docs.example.com", services=(svc,)), "app")
    assert CaPaths.under(host.config.root).exists()
    assert any("Creating the cluster CA" in m for m in host.progress.messages)  # type: ignore[attr-defined]
    d = ssl(host)
    assert (d / "host.key").stat().st_mode & 0o777 == 0o600
    assert (d / "host.crt").stat().st_mode & 0o777 == 0o644
    assert d.stat().st_mode & 0o777 == 0o755
    if os.geteuid() == 0:
        assert (d / "host.key").stat().st_uid == 0
    cert = leaf(host)
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == [
        "app.jail.rex.internal",
        "docs.example.com",
        "renderer.svc.rex.internal",
    ]
    assert [str(ip) for ip in sans.get_values_for_type(x509.IPAddress)] == ["203.0.113.2"]
    authority = load(CaPaths.under(host.config.root))
    assert (d / "cluster.crt").read_bytes() == authority.trust_pem()
    cert.verify_directly_issued_by(authority.cert)
    rec = registry.current(host.store, "app")
    assert rec is not None and rec["serial"] == format(cert.serial_number, "x")
    assert "PRIVATE KEY" not in str(host.store.list(""))  # the key lives only in the jail
    assert not list(host.config.root.rglob("host.key"))


def test_restart_keeps_a_good_certificate(host: Host, tmp_path: Path) -> None:
    jails.up(host, rexfile(tmp_path), "app")
    first = leaf(host).serial_number
    jails.restart(host, "app")
    assert leaf(host).serial_number == first


def test_missing_or_replaced_files_are_reissued(host: Host, tmp_path: Path) -> None:
    jails.up(host, rexfile(tmp_path), "app")
    first = leaf(host).serial_number
    (ssl(host) / "host.key").unlink()
    jails.restart(host, "app")
    second = leaf(host).serial_number
    assert second != first
    (ssl(host) / "host.key").write_text("not a key")
    jails.restart(host, "app")
    assert leaf(host).serial_number != second
    revoked = {
        r.serial
        for r in registry.revoked(host.store, load(CaPaths.under(host.config.root)).fingerprint)
    }
    assert {first, second} <= revoked
    crl = x509.load_pem_x509_crl(CaPaths.under(host.config.root).crl.read_bytes())
    assert crl.get_revoked_certificate_by_serial_number(first) is not None


def test_a_certificate_in_its_last_third_is_renewed_at_start(host: Host, tmp_path: Path) -> None:
    jails.up(host, rexfile(tmp_path), "app")
    first = leaf(host).serial_number
    rec = registry.current(host.store, "app")
    assert rec is not None
    for key in ("not_before", "not_after"):
        rec[key] -= 61 * 86400  # pretend 61 of its 90 days went by
    registry.record_issued(host.store, "app", rec)
    jails.stop(host, "app")
    jails.start(host, "app")
    assert leaf(host).serial_number != first
    assert any("last third" in m for m in host.progress.messages)  # type: ignore[attr-defined]


def test_forced_renewal_and_destroy_revoke(host: Host, tmp_path: Path) -> None:
    jails.up(host, rexfile(tmp_path), "app")
    first = leaf(host).serial_number
    rec = jails.record(host, "app")
    assert rec is not None
    why = ensure_identity(host, rec, jails.spec_for(host, rec), force=True)
    assert why == "renewal was asked for"
    second = leaf(host).serial_number
    jails.destroy(host, "app")
    assert registry.current(host.store, "app") is None
    fp = load(CaPaths.under(host.config.root)).fingerprint
    reasons = {r.serial: r.reason for r in registry.revoked(host.store, fp)}
    assert reasons == {first: "superseded", second: "cessationOfOperation"}


def test_a_failed_up_revokes_what_it_issued(host: Host, tmp_path: Path) -> None:
    runtime = host.runtime
    assert isinstance(runtime, FakeRuntime)
    runtime.fail_start.add("app")
    with pytest.raises(Exception, match="failed to start"):
        jails.up(host, rexfile(tmp_path), "app")
    fp = load(CaPaths.under(host.config.root)).fingerprint
    assert [r.reason for r in registry.revoked(host.store, fp)] == ["cessationOfOperation"]


def test_a_bad_hostname_fails_before_a_ca_is_made(host: Host, tmp_path: Path) -> None:
    with pytest.raises(PkiError, match="cannot be a name in its certificate"):
        jails.up(host, rexfile(tmp_path, hostname="bad_name.example.com"), "app")
    assert not CaPaths.under(host.config.root).exists()
    assert jails.list_jails(host) == []


def test_a_symlink_in_the_image_cannot_send_the_key_out(host: Host, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    rf = rexfile(tmp_path)
    jails.up(host, rf, "app")
    root = host.storage.mountpoint("jails/app")
    jails.stop(host, "app")
    for p in (ssl(host) / n for n in ("host.key", "host.crt", "cluster.crt")):
        p.unlink()
    ssl(host).rmdir()
    # an absolute link is the jail's view: it lands inside the root
    (root / "etc/ssl/rc").symlink_to(str(outside))
    jails.start(host, "app")
    assert list(outside.iterdir()) == []
    assert (root / str(outside).lstrip("/") / "host.key").exists()
    jails.stop(host, "app")
    (root / "etc/ssl/rc").unlink()
    (root / "etc/ssl/rc").symlink_to("../../../../../../../../" + str(outside).lstrip("/"))
    with pytest.raises(UnsafePath):
        jails.start(host, "app")
    assert list(outside.iterdir()) == []


def test_a_hard_link_in_the_jail_is_replaced_not_written_through(
    host: Host, tmp_path: Path
) -> None:
    jails.up(host, rexfile(tmp_path), "app")
    root = host.storage.mountpoint("jails/app")
    public = root / "public.txt"
    public.write_text("public\n")
    (ssl(host) / "host.key").unlink()
    os.link(public, ssl(host) / "host.key")
    jails.restart(host, "app")
    assert public.read_text() == "public\n"
    assert b"PRIVATE KEY" in (ssl(host) / "host.key").read_bytes()


def test_a_start_with_a_good_certificate_needs_no_cryptography(
    host: Host, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from rexcarcer.pki import hook

    jails.up(host, rexfile(tmp_path), "app")
    first = leaf(host).serial_number

    def no_ca(host: Host) -> None:
        raise AssertionError("the CA was loaded: cryptography would be imported")

    monkeypatch.setattr(hook, "ensure_ca", no_ca)
    jails.restart(host, "app")  # decided from the store, ca.json, a read and a stat
    monkeypatch.undo()
    key = ssl(host) / "host.key"
    os.utime(key, ns=(1, 1))  # same key, different mtime: the full check, no new certificate
    jails.restart(host, "app")
    assert leaf(host).serial_number == first
    rec = registry.current(host.store, "app")
    assert rec is not None and rec["key_file"][2] == 1  # noted: cheap again next time
    monkeypatch.setattr(hook, "ensure_ca", no_ca)
    jails.restart(host, "app")
