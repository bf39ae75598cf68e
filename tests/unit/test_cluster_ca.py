"""The cluster CA's record in the store: its certificates published by ``rex
cluster init``; its key only with ``--share-ca``, then installed by ``rex
cluster join``; another CA is never overwritten."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from rexcarcer.cluster import ClusterError, cashare
from rexcarcer.pki import ca
from rexcarcer.pki.layout import CaPaths
from rexcarcer.state.base import put_json
from rexcarcer.state.memory import MemoryStore


def _new_ca(root: Path) -> CaPaths:
    paths = CaPaths.under(root)
    now = ca.utcnow()
    ca.install(paths, ca.self_signed(ca.CaSettings(name="Cluster CA"), now), now=now)
    return paths


def _tree(paths: CaPaths) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(paths.dir.iterdir())}


def test_only_the_certificates_are_published_unless_shared(tmp_path: Path) -> None:
    store = MemoryStore()
    first = _new_ca(tmp_path / "h1")
    fingerprint, uploaded = cashare.publish(store, first, "h1")
    assert uploaded and fingerprint == first.fingerprint()
    record = cashare.shared(store)
    assert record is not None and "files" not in record and record["host"] == "h1"
    assert record["cert"] == first.cert.read_text() and "PRIVATE KEY" not in json.dumps(record)
    other = CaPaths.under(tmp_path / "h2")
    assert cashare.install(store, other) == (fingerprint, False)  # nothing to install
    assert not other.dir.exists()


def test_join_installs_the_shared_ca(tmp_path: Path) -> None:
    store = MemoryStore()
    first = _new_ca(tmp_path / "h1")
    fingerprint, uploaded = cashare.publish(store, first, "h1", share=True)
    assert uploaded and fingerprint == first.fingerprint()

    other = CaPaths.under(tmp_path / "h2")
    assert cashare.install(store, other) == (fingerprint, True)
    assert _tree(other) == _tree(first)
    assert stat.S_IMODE(other.dir.stat().st_mode) == 0o700
    assert stat.S_IMODE(other.key.stat().st_mode) == 0o600
    assert ca.load(other).fingerprint == fingerprint
    # again: nothing to do
    assert cashare.install(store, other) == (fingerprint, False)
    # init again from the first host, or from the second: the same CA, not uploaded
    assert cashare.publish(store, other, "h2", share=True) == (fingerprint, False)
    assert cashare.shared(store)["host"] == "h1"  # type: ignore[index]


def test_another_local_ca_is_refused_and_kept(tmp_path: Path) -> None:
    store = MemoryStore()
    cashare.publish(store, _new_ca(tmp_path / "h1"), "h1")
    mine = _new_ca(tmp_path / "h2")
    before = _tree(mine)
    with pytest.raises(ClusterError, match="another CA") as err:
        cashare.install(store, mine)
    assert "move" in (err.value.hint or "")
    with pytest.raises(ClusterError, match="already has another CA"):
        cashare.publish(store, mine, "h2")
    assert _tree(mine) == before


def test_no_shared_ca_installs_nothing(tmp_path: Path) -> None:
    paths = CaPaths.under(tmp_path / "h")
    assert cashare.install(MemoryStore(), paths) == (None, False)
    assert not paths.dir.exists()


def test_malformed_or_tampered_records_are_refused(tmp_path: Path) -> None:
    store = MemoryStore()
    put_json(store, cashare.KEY, {"fingerprint": "ab", "files": {"ca.crt": "x"}})
    target = CaPaths.under(tmp_path / "h2")
    with pytest.raises(ClusterError, match="malformed"):
        cashare.install(store, target)

    record = cashare.record_of(_new_ca(tmp_path / "h1"), "h1", share=True)
    record["fingerprint"] = "00" * 32  # says one CA, carries another
    put_json(store, cashare.KEY, record)
    with pytest.raises(ClusterError, match="does not match"):
        cashare.install(store, target)
    assert not target.dir.exists()
    assert not list((tmp_path / "h2").glob("ca*"))


def test_a_key_that_does_not_match_is_not_published(tmp_path: Path) -> None:
    first, second = _new_ca(tmp_path / "h1"), _new_ca(tmp_path / "h2")
    first.key.write_bytes(second.key.read_bytes())
    store = MemoryStore()
    with pytest.raises(Exception, match="does not belong"):
        cashare.publish(store, first, "h1")
    assert store.get(cashare.KEY) is None
    assert json.loads(first.meta.read_text())["fingerprint"]
