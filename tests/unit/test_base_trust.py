"""The trust directory: add, list, remove; validity checked at add time."""

from __future__ import annotations

from pathlib import Path

import pytest

from rexcarcer.base import VerificationError
from rexcarcer.base.sign import now
from rexcarcer.base.trust import TrustStore
from rexcarcer.errors import Conflict, NotFound, StateError, UsageError
from tests.base_support import dated_signer, openssl_signer


def test_add_ls_rm(tmp_path: Path) -> None:
    store = TrustStore(tmp_path / "trust")
    assert store.list() == [] and store.fingerprints() == []
    a = openssl_signer(tmp_path / "k", "alice", "rsa")
    b = openssl_signer(tmp_path / "k", "bob", "ec")
    info = store.add(a.cert, now())
    assert info.fingerprint == a.fingerprint
    store.add(b.cert, now())
    assert sorted(store.fingerprints()) == sorted([a.fingerprint, b.fingerprint])
    assert {i.subject for i in store.list()} == {"alice", "bob"}
    assert (tmp_path / "trust" / f"{a.fingerprint}.pem").stat().st_mode & 0o777 == 0o644
    with pytest.raises(Conflict, match="already trusted"):
        store.add(a.cert, now())
    colons = ":".join(a.fingerprint[i : i + 2] for i in range(0, 16, 2)).upper()
    assert store.remove(colons).subject == "alice"
    assert store.fingerprints() == [b.fingerprint]
    with pytest.raises(NotFound):
        store.remove(a.fingerprint)


def test_expired_or_future_certificates_are_not_added(tmp_path: Path) -> None:
    store = TrustStore(tmp_path / "trust")
    old = dated_signer(tmp_path, "old", start_days=-30, end_days=-2)
    future = dated_signer(tmp_path, "future", start_days=3, end_days=30)
    with pytest.raises(VerificationError, match="expired on"):
        store.add(old.cert, now())
    with pytest.raises(VerificationError, match="not valid yet"):
        store.add(future.cert, now())
    assert store.fingerprints() == []


def test_fingerprint_prefixes(tmp_path: Path) -> None:
    store = TrustStore(tmp_path / "trust")
    a = openssl_signer(tmp_path, "a", "ec")
    store.add(a.cert, now())
    with pytest.raises(UsageError, match="bad fingerprint") as err:
        store.resolve(a.fingerprint[:7])
    assert err.value.hint == "give at least 8 hex digits, see `rex trust ls`"
    with pytest.raises(UsageError, match="bad fingerprint"):
        store.resolve("zz" * 10)
    assert store.resolve(a.fingerprint[:8]) == a.fingerprint


def test_a_certificate_under_the_wrong_name_is_an_error(tmp_path: Path) -> None:
    store = TrustStore(tmp_path / "trust")
    a, b = openssl_signer(tmp_path, "a", "ec"), openssl_signer(tmp_path, "b", "ec")
    (tmp_path / "trust").mkdir()
    (tmp_path / "trust" / f"{a.fingerprint}.pem").write_bytes(b.cert.read_bytes())
    (tmp_path / "trust" / "README").write_text("not a certificate")
    assert store.fingerprints() == [a.fingerprint]
    with pytest.raises(StateError, match="another fingerprint"):
        store.get(a.fingerprint)
