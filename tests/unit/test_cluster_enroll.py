"""Joining with a token and renewing through the CA host, on the memory store:
the HMAC, the token's expiry and single use, tampered requests and answers, the
CA's key kept out of etcd, revocation and the cluster CA's CRL."""

from __future__ import annotations

import datetime as dt
import ipaddress
import stat
import time
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from rexcarcer.cluster import (
    ClusterError,
    EnrollError,
    cashare,
    enroll,
    membership,
    onboard,
    tls,
    tokens,
)
from rexcarcer.cluster import signer as signer_mod
from rexcarcer.cluster.auth import authorize
from rexcarcer.config import Config
from rexcarcer.pki import jailca, roles
from rexcarcer.pki.layout import CaPaths, JailCaPaths
from rexcarcer.progress import QuietProgress
from rexcarcer.state.base import put_json
from rexcarcer.state.memory import MemoryStore
from tests.unit import cluster_pki as bed

ZONE = bed.ZONE


def _der(cfg: Config) -> bytes:
    pem = tls.TlsFiles.under(cfg.root).cert.read_bytes()
    return x509.load_pem_x509_certificates(pem)[0].public_bytes(serialization.Encoding.DER)


def _answer(store: MemoryStore, pending: enroll.Pending) -> dict[str, Any]:
    got = enroll.answer(store, pending)
    assert got is not None
    return got


@pytest.fixture
def ready(tmp_path: Path) -> tuple[MemoryStore, Config, Config]:
    """The cluster, and h2 registered but without certificates yet."""
    store, h1 = bed.cluster(tmp_path)
    h2, _ = bed.member(store, bed.config(tmp_path, "h2"), "h2")
    return store, h1, h2


def _start(store: MemoryStore, h2: Config, token: tokens.Token, **kw: Any) -> enroll.Pending:
    return enroll.start_join(store, h2, host="h2", address=bed.ADDRESSES["h2"], token=token,
                             public=kw.pop("public", []), **kw)  # fmt: skip


def test_a_join_with_a_token_installs_what_the_ca_host_signed(
    ready: tuple[MemoryStore, Config, Config],
) -> None:
    store, h1, h2 = ready
    token = bed.token(store, h1)
    record = store.get(tokens.PREFIX + token.id)
    assert record is not None and token.text not in record.value  # etcd holds a hash
    assert record.json()["sha256"] == token.digest
    pending = _start(store, h2, token, public=[ipaddress.ip_network("192.0.2.0/28")])
    request = store.get(enroll.request_key(pending.rid))
    assert request is not None and "PRIVATE KEY" not in request.value
    assert bed.sign(store, h1) == 1
    done = enroll.finish(store, h2, pending, _answer(store, pending))
    assert authorize(_der(h2), store, ZONE) == "h2"
    files, jpaths = tls.TlsFiles.under(h2.root), JailCaPaths.under(h2.root)
    for key in (files.key, jpaths.key):
        assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert stat.S_IMODE(jpaths.dir.stat().st_mode) == 0o700
    assert not CaPaths.under(h2.root).exists()  # a member never holds (or makes) a root
    jail_ca = jailca.load(jpaths)
    assert [str(n) for n in jailca._permitted(jail_ca.cert)] == ["203.0.113.64/26", "192.0.2.0/28"]
    assert jpaths.settings()["root"] == done.ca_fingerprint == CaPaths.under(h1.root).fingerprint()
    # the token served once; the request and its answer are gone
    assert store.get(tokens.PREFIX + token.id) is None
    assert store.list(enroll.PREFIX) == []
    # what the CA host recorded
    assert store.get("pki/hosts/h2").json()["serial"] == done.host_serial  # type: ignore[union-attr]
    assert store.get("pki/jail-cas/h2").json()["serial"] == done.jail_ca_serial  # type: ignore[union-attr]
    # nothing in etcd holds a private key
    assert "PRIVATE KEY" not in str([e.value for e in store.list("")])


def test_a_token_serves_one_join(ready: tuple[MemoryStore, Config, Config], tmp_path: Path) -> None:
    store, h1, h2 = ready
    token = bed.token(store, h1)
    first = _start(store, h2, token)
    bed.sign(store, h1)
    enroll.finish(store, h2, first, _answer(store, first))
    h3, _ = bed.member(store, bed.config(tmp_path, "h3"), "h3")
    again = enroll.start_join(store, h3, host="h3", address=bed.ADDRESSES["h3"], token=token,
                              public=[])  # fmt: skip
    bed.sign(store, h1)
    with pytest.raises(EnrollError, match="refused: the join token was used already") as err:
        enroll.finish(store, h3, again, _answer(store, again))
    assert err.value.exit_code == 44 and "rex cluster token" in (err.value.hint or "")
    assert not tls.TlsFiles.under(h3.root).present()


def test_an_expired_token_is_refused_on_both_sides(
    ready: tuple[MemoryStore, Config, Config],
) -> None:
    store, h1, h2 = ready
    token = bed.token(store, h1, ttl=60)
    with pytest.raises(EnrollError, match="expired"):
        _start(store, h2, token, now=token.expires + 1)
    # a host whose clock is behind still sends it: the CA host refuses it
    pending = _start(store, h2, token, now=token.expires - 30)
    request = store.get(enroll.request_key(pending.rid))
    assert request is not None
    later = dt.datetime.fromtimestamp(token.expires + 1, dt.UTC)
    signer = signer_mod.Signer(store, CaPaths.under(h1.root), ZONE)
    assert "the join token expired" in signer.handle(pending.rid, request, later)
    assert store.get(tokens.PREFIX + token.id) is not None  # not consumed by a refusal
    # a token cannot be stretched: another expiry makes another secret
    stretched = tokens.Token(token.id, token.expires + 3600, token.secret)
    moved = _start(store, h2, stretched)
    bed.sign(store, h1)
    with pytest.raises(EnrollError, match="not one this CA host made"):
        enroll.finish(store, h2, moved, _answer(store, moved))


def test_a_request_changed_in_etcd_is_refused(ready: tuple[MemoryStore, Config, Config]) -> None:
    store, h1, h2 = ready
    token = bed.token(store, h1)
    pending = _start(store, h2, token)
    key = enroll.request_key(pending.rid)
    entry = store.get(key)
    assert entry is not None
    body = entry.json()
    # someone with write access swaps in a CSR for a key of their own
    theirs = ec.generate_private_key(ec.SECP256R1())
    put_json(store, key, {**body, "host_csr": roles.csr_pem(theirs, "h2.host.rex.internal")})
    bed.sign(store, h1)
    with pytest.raises(EnrollError, match="MAC does not verify"):
        enroll.finish(store, h2, pending, _answer(store, pending))
    # a guessed secret for a real token id: its MAC is not the token's
    guess = tokens.Token(token.id, token.expires, "0" * 32)
    wrong = _start(store, h2, guess)
    bed.sign(store, h1)
    with pytest.raises(EnrollError, match="MAC does not verify"):
        enroll.finish(store, h2, wrong, _answer(store, wrong))
    # the token holder's CSR whose self-signature is broken (MAC recomputed)
    bad = _start(store, h2, token)
    body = store.get(enroll.request_key(bad.rid)).json()  # type: ignore[union-attr]
    csr = x509.load_pem_x509_csr(body["host_csr"].encode())
    raw = bytearray(csr.public_bytes(serialization.Encoding.DER))
    raw[-5] ^= 0xFF  # inside the signature
    import base64

    b64 = base64.encodebytes(bytes(raw)).decode()
    begin, end = "-----BEGIN CERTIFICATE REQUEST-----", "-----END CERTIFICATE REQUEST-----"
    body["host_csr"] = f"{begin}\n{b64}{end}\n"
    body["mac"] = tokens.mac(token, body)
    put_json(store, enroll.request_key(bad.rid), body)
    bed.sign(store, h1)
    with pytest.raises(EnrollError, match=r"signature does not verify|malformed certificate"):
        enroll.finish(store, h2, bad, _answer(store, bad))
    # none of this used the token, and h2 got nothing
    assert store.get(tokens.PREFIX + token.id) is not None
    assert not tls.TlsFiles.under(h2.root).present()


def test_an_answer_changed_in_etcd_is_refused(ready: tuple[MemoryStore, Config, Config]) -> None:
    store, h1, h2 = ready
    pending = _start(store, h2, bed.token(store, h1))
    bed.sign(store, h1)
    got = _answer(store, pending)
    from rexcarcer.pki import ca  # a rogue CA's certificate in place of the cluster's

    other = ca.self_signed(ca.CaSettings(), ca.utcnow())
    forged = {**got, "ca": other.cert.public_bytes(serialization.Encoding.PEM).decode()}
    with pytest.raises(EnrollError, match="not authenticated by the token"):
        enroll.finish(store, h2, pending, forged)
    assert not tls.TlsFiles.under(h2.root).present()


def test_a_join_is_refused_for_another_address_or_anothers_range(
    ready: tuple[MemoryStore, Config, Config], tmp_path: Path
) -> None:
    store, h1, h2 = ready
    token = bed.token(store, h1)
    moved = enroll.start_join(store, h2, host="h2", address="198.51.100.99", token=token,
                              public=[])  # fmt: skip
    bed.sign(store, h1)
    with pytest.raises(EnrollError, match=r"registered at 198.51.100.12"):
        enroll.finish(store, h2, moved, _answer(store, moved))
    grab = _start(store, h2, token, public=[ipaddress.ip_network("203.0.113.0/28")])
    bed.sign(store, h1)
    with pytest.raises(EnrollError, match=r"overlaps 203.0.113.0/26, another host's jail subnet"):
        enroll.finish(store, h2, grab, _answer(store, grab))
    hosts = _start(store, h2, token, public=[ipaddress.ip_network("198.51.100.0/28")])
    bed.sign(store, h1)
    with pytest.raises(EnrollError, match="contains host h1's address"):
        enroll.finish(store, h2, hosts, _answer(store, hosts))


def test_no_answer_in_time_says_whose_agent_to_start(
    ready: tuple[MemoryStore, Config, Config],
) -> None:
    store, h1, h2 = ready
    pending = _start(store, h2, bed.token(store, h1))
    clock = iter(range(0, 1000, 5))
    progress = QuietProgress()
    with pytest.raises(EnrollError, match="h1 did not sign within 30 s") as err:
        enroll.wait(store, pending, 30, progress, clock=lambda: float(next(clock)),
                    sleep=lambda _: None)  # fmt: skip
    assert "is `rex agent` running on h1" in (err.value.hint or "")
    assert "it was not used" in (err.value.hint or "")
    assert any("still waiting for h1 (20 s)" in m for m in progress.messages)
    assert store.list(enroll.PREFIX) == []  # withdrawn


def test_renewal_is_signed_for_the_current_certificate_only(
    ready: tuple[MemoryStore, Config, Config],
) -> None:
    store, h1, h2 = ready
    pending = _start(store, h2, bed.token(store, h1))
    bed.sign(store, h1)
    first = enroll.finish(store, h2, pending, _answer(store, pending))
    old_der, jail_key = _der(h2), JailCaPaths.under(h2.root).key_id()
    renew = enroll.start_renew(store, h2, host="h2", address=bed.ADDRESSES["h2"])
    bed.sign(store, h1)
    second = enroll.finish(store, h2, renew, _answer(store, renew))
    assert second.host_serial != first.host_serial
    assert authorize(_der(h2), store, ZONE) == "h2"
    assert authorize(old_der, store, ZONE) is None  # superseded: revoked
    assert JailCaPaths.under(h2.root).key_id() == jail_key  # the jail CA kept its key
    # a renewal signed with the superseded certificate is refused
    stale = dict(store.get("pki/hosts/h2").json())  # type: ignore[union-attr]
    assert stale["serial"] == second.host_serial
    body = _renewal_with(old_der, store, h2)
    bed.sign(store, h1)
    with pytest.raises(EnrollError, match="revoked or superseded"):
        enroll.finish(store, h2, body, _answer(store, body))


def _renewal_with(der: bytes, store: MemoryStore, h2: Config) -> enroll.Pending:
    """A renewal request carrying certificate ``der`` (signed with the current key:
    the signature is not what is refused)."""
    pending = enroll.start_renew(store, h2, host="h2", address=bed.ADDRESSES["h2"])
    key = enroll.request_key(pending.rid)
    body = store.get(key).json()  # type: ignore[union-attr]
    cert = x509.load_der_x509_certificate(der)
    body["cert"] = cert.public_bytes(serialization.Encoding.PEM).decode()
    put_json(store, key, body)
    return pending


def test_a_renewal_without_the_hosts_key_is_refused(
    ready: tuple[MemoryStore, Config, Config],
) -> None:
    store, h1, h2 = ready
    pending = _start(store, h2, bed.token(store, h1))
    bed.sign(store, h1)
    enroll.finish(store, h2, pending, _answer(store, pending))
    renew = enroll.start_renew(store, h2, host="h2", address=bed.ADDRESSES["h2"])
    key = enroll.request_key(renew.rid)
    body = store.get(key).json()  # type: ignore[union-attr]
    body["public"] = ["192.0.2.0/28"]  # changed after signing
    put_json(store, key, body)
    bed.sign(store, h1)
    with pytest.raises(EnrollError, match="signature does not verify"):
        enroll.finish(store, h2, renew, _answer(store, renew))


def test_leave_revokes_and_the_ca_host_signs_its_crl(
    ready: tuple[MemoryStore, Config, Config],
) -> None:
    store, h1, h2 = ready
    pending = _start(store, h2, bed.token(store, h1))
    bed.sign(store, h1)
    done = enroll.finish(store, h2, pending, _answer(store, pending))
    onboard.leave(h2, store, force=False)
    assert not tls.TlsFiles.under(h2.root).present() and not JailCaPaths.under(h2.root).exists()
    assert store.get("pki/hosts/h2") is None and store.get("pki/jail-cas/h2") is None
    view = {e.key: e for e in store.list("")}
    paths = CaPaths.under(h1.root)
    now = time.time()
    assert signer_mod.root_crl_stale(view, paths.fingerprint(), now)
    signer_mod.Signer(store, paths, ZONE).sync(view)
    crl = x509.load_pem_x509_crl(paths.crl.read_bytes())
    revoked = {r.serial_number for r in crl}
    assert {int(done.host_serial, 16), int(done.jail_ca_serial, 16)} <= revoked
    from rexcarcer.pki import ca

    assert crl.is_signature_valid(ca.load(paths).cert.public_key())  # type: ignore[arg-type]
    published = store.get("pki/root-crl")
    assert published is not None and published.json()["pem"] == paths.crl.read_text()
    view = {e.key: e for e in store.list("")}
    assert not signer_mod.root_crl_stale(view, paths.fingerprint(), now)


def test_the_ca_key_goes_to_etcd_only_when_asked_and_only_over_client_tls(
    tmp_path: Path,
) -> None:
    store, h1 = bed.cluster(tmp_path)
    record = store.get(cashare.KEY)
    assert record is not None and "PRIVATE KEY" not in record.value
    assert record.json()["host"] == "h1"
    with pytest.raises(ClusterError, match="is not https"):
        cashare.check_share(["http://198.51.100.11:2379"], Path("/etc/c.pem"))
    with pytest.raises(ClusterError, match="no client certificate"):
        cashare.check_share(["https://198.51.100.11:2379"], None)
    cashare.check_share(["https://198.51.100.11:2379"], Path("/etc/c.pem"))  # allowed
    cashare.publish(store, CaPaths.under(h1.root), "h1", share=True)
    assert "PRIVATE KEY" in store.get(cashare.KEY).value  # type: ignore[union-attr]
    h3, joined = bed.member(store, bed.config(tmp_path, "h3"), "h3")
    assert cashare.install(store, CaPaths.under(h3.root))[1]  # --share-ca: installed
    enroll.issue_here(store, h3, address=bed.ADDRESSES["h3"], subnet=joined.subnet)
    assert authorize(_der(h3), store, ZONE) == "h3"
    cashare.publish(store, CaPaths.under(h1.root), "h1", share=False)  # and out again
    assert "PRIVATE KEY" not in store.get(cashare.KEY).value  # type: ignore[union-attr]


def test_tokens_are_made_on_the_ca_host_only(tmp_path: Path) -> None:
    store, h1 = bed.cluster(tmp_path)
    h2, _ = bed.member(store, bed.config(tmp_path, "h2"), "h2")
    with pytest.raises(EnrollError, match=r"made on the CA host \(h1\)"):
        onboard.make_token(h2, store, 60)
    assert (CaPaths.under(h1.root).dir / "join.key").exists() is False
    bed.token(store, h1)
    key = CaPaths.under(h1.root).dir / "join.key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600 and len(key.read_bytes()) == 32
    assert tokens.parse_duration("90") == 90 and tokens.parse_duration("2h") == 7200
    for bad in ("0", "8d", "1w", "soon"):
        with pytest.raises(ClusterError, match="bad token lifetime"):
            tokens.parse_duration(bad)
    with pytest.raises(ClusterError, match="not a join token"):
        tokens.parse("rex1.abc")


def test_a_member_never_makes_a_ca_of_its_own(tmp_path: Path) -> None:
    """The identity hook on a cluster host without its jail CA refuses to issue,
    where a single host would create a CA."""
    import dataclasses

    from rexcarcer.engine import jails
    from rexcarcer.pki import PkiError
    from rexcarcer.pki.hook import IdentityHook
    from rexcarcer.rexfile.ast import Base, Rexfile, Run
    from tests.unit.fakes import fake_engine

    eng = fake_engine(tmp_path, [IdentityHook()])
    eng.host.config = dataclasses.replace(eng.host.config, etcd=("http://198.51.100.11:2379",))
    rf = Rexfile(base=Base("bb"), steps=(Run("true"),), path=tmp_path / "app.rex")
    with pytest.raises(PkiError, match="cannot issue jail certificates") as err:
        jails.up(eng, rf, "app")
    assert "gets its jail CA from the CA host" in (err.value.hint or "")
    assert not CaPaths.under(eng.host.config.root).exists()
    assert not JailCaPaths.under(eng.host.config.root).exists()
    assert jails.list_jails(eng) == []


def test_membership_leave_lists_what_it_removed(ready: tuple[MemoryStore, Config, Config]) -> None:
    store, h1, h2 = ready
    pending = _start(store, h2, bed.token(store, h1))
    bed.sign(store, h1)
    enroll.finish(store, h2, pending, _answer(store, pending))
    removed = membership.leave(store, "h2")
    assert "pki/hosts/h2" in removed and "hosts/h2" in removed


def test_another_host_is_removed_and_revoked_from_here(
    ready: tuple[MemoryStore, Config, Config],
) -> None:
    """`rex cluster leave --host h2` on h1: for a host that died or is compromised."""
    store, h1, h2 = ready
    pending = _start(store, h2, bed.token(store, h1))
    bed.sign(store, h1)
    enroll.finish(store, h2, pending, _answer(store, pending))
    der = _der(h2)
    onboard.leave(h1, store, force=False, host="h2")
    assert authorize(der, store, ZONE) is None
    assert store.get("hosts/h2") is None and store.get("pki/hosts/h2") is None
    assert tls.TlsFiles.under(h1.root).present()  # h1's own credentials untouched


def test_the_agent_renews_a_certificate_in_its_last_third(
    ready: tuple[MemoryStore, Config, Config],
) -> None:
    import json

    from rexcarcer.cluster.renewal import Renewal

    store, h1, h2 = ready
    pending = _start(store, h2, bed.token(store, h1))
    bed.sign(store, h1)
    first = enroll.finish(store, h2, pending, _answer(store, pending))
    reloads: list[int] = []
    renewal = Renewal(store, h2, reload=lambda: reloads.append(1))

    def view() -> dict[str, Any]:
        return {e.key: e for e in store.list("")}

    renewal.sync(view())
    assert renewal.pending is None  # not due: nothing asked
    files = tls.TlsFiles.under(h2.root)
    meta = files.settings()
    span = meta["not_after"] - meta["not_before"]
    meta["not_before"] -= span * 0.7  # as if 70 % of its validity went by
    meta["not_after"] -= span * 0.7
    files.meta.write_text(json.dumps(meta))
    renewal.sync(view())
    assert renewal.pending is not None and reloads == []
    bed.sign(store, h1)  # the CA host's agent, at its next pass
    renewal.sync(view())
    assert renewal.pending is None and reloads == [1]
    now = x509.load_pem_x509_certificates(files.cert.read_bytes())[0]
    assert format(now.serial_number, "x") != first.host_serial
    assert authorize(_der(h2), store, ZONE) == "h2"
    # on the CA host the same pass renews here
    ca_files = tls.TlsFiles.under(h1.root)
    meta = ca_files.settings()
    meta["not_after"] = meta["not_before"] + 1
    ca_files.meta.write_text(json.dumps(meta))
    before = ca_files.cert.read_bytes()
    Renewal(store, h1).sync(view())
    assert ca_files.cert.read_bytes() != before
