"""Secrets on one host (files.py) and in a cluster (seal.py, cluster.py): two
fake hosts with real P-256 keys on the memory store, so every sealed copy is
really encrypted and really opened."""

from __future__ import annotations

import base64
import json
import os
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from rexcarcer.config import TESTING_ENV, Config, load_config
from rexcarcer.errors import Conflict, UsageError
from rexcarcer.model.jail import JailRecord
from rexcarcer.names import secret_name_problem
from rexcarcer.pki.keys import key_pem
from rexcarcer.secret import SecretError, cluster, seal
from rexcarcer.secret.files import LocalSecrets
from rexcarcer.secret.hostkey import key_path
from rexcarcer.secret.publish import keep_sealing_key
from rexcarcer.secret.source import SecretAdmin
from rexcarcer.state import records
from rexcarcer.state.base import put_json
from rexcarcer.state.memory import MemoryStore

VALUE = b"s3cr3t-\x00-value\n"


# -- names -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["db_password", "API.key-2", "a", "9" * 64])
def test_good_secret_names(name: str) -> None:
    assert secret_name_problem(name) is None


@pytest.mark.parametrize("name", ["", ".x", "-x", "a/b", "..", "a b", "é", "a" * 65, "a\n"])
def test_bad_secret_names(name: str) -> None:
    assert secret_name_problem(name) is not None


# -- one host: files ---------------------------------------------------------------------


def test_files_are_0600_in_a_0700_directory_and_read_back(tmp_path: Path) -> None:
    s = LocalSecrets(tmp_path)
    s.set("db", VALUE)
    assert stat.S_IMODE((tmp_path / "secrets").stat().st_mode) == 0o700
    assert stat.S_IMODE((tmp_path / "secrets" / "db").stat().st_mode) == 0o600
    assert s.get("db") == VALUE
    s.set("db", b"rotated")
    assert s.get("db") == b"rotated"
    assert [(i.name, i.size) for i in s.list()] == [("db", 7)]
    assert os.listdir(tmp_path / "secrets") == ["db"]  # no temporary file left
    assert s.remove("db") and not s.remove("db")
    with pytest.raises(SecretError, match="no secret named 'db'") as err:
        s.get("db")
    assert err.value.exit_code == 70 and "rex secret set db" in (err.value.hint or "")


def test_a_loose_directory_mode_is_tightened(tmp_path: Path) -> None:
    (tmp_path / "secrets").mkdir(mode=0o755)
    LocalSecrets(tmp_path).set("db", VALUE)
    assert stat.S_IMODE((tmp_path / "secrets").stat().st_mode) == 0o700


def test_a_planted_symlink_is_not_followed(tmp_path: Path) -> None:
    s = LocalSecrets(tmp_path)
    s.set("db", VALUE)
    (tmp_path / "elsewhere").write_bytes(b"not a secret")
    (tmp_path / "secrets" / "link").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(SecretError, match="cannot read secret link"):
        s.get("link")
    assert [i.name for i in s.list()] == ["db"]


@pytest.mark.parametrize(("value", "why"), [(b"", "is empty"), (b"x" * (65 << 10), "limit is")])
def test_empty_and_oversized_values_are_refused(tmp_path: Path, value: bytes, why: str) -> None:
    with pytest.raises(SecretError, match=why):
        LocalSecrets(tmp_path).set("db", value)
    assert not (tmp_path / "secrets" / "db").exists()


def test_bad_names_are_refused_by_set_and_unknown_to_get(tmp_path: Path) -> None:
    s = LocalSecrets(tmp_path)
    with pytest.raises(UsageError, match="bad secret name"):
        s.set("../escape", VALUE)
    with pytest.raises(SecretError, match="no secret named"):
        s.get("../../etc/passwd")
    assert not (tmp_path / "escape").exists()


def test_rm_is_refused_while_a_jail_names_the_secret(tmp_path: Path) -> None:
    config = load_config(root=tmp_path, environ=dict(TESTING_ENV))
    store = MemoryStore()
    admin = SecretAdmin(config, store)
    admin.set("db", VALUE)
    records.put_jail(store, JailRecord(name="web", secrets=("db",)))
    with pytest.raises(Conflict, match="used by jail"):
        admin.remove("db")
    records.delete_jail(store, "web")
    admin.remove("db")
    with pytest.raises(SecretError, match="no secret named"):
        admin.remove("db")


# -- a cluster: sealed to each host's key -------------------------------------------------


def _keys() -> dict[str, ec.EllipticCurvePrivateKey]:
    return {h: ec.generate_private_key(ec.SECP256R1()) for h in ("h1", "h2")}


def _cluster(keys: dict[str, ec.EllipticCurvePrivateKey], *extra: str) -> MemoryStore:
    store = MemoryStore()
    for h in [*keys, *extra]:
        put_json(store, f"hosts/{h}", {"name": h, "address": "198.51.100.1", "subnet": ""})
    for h, k in keys.items():
        cluster.publish(store, h, k)
    return store


def _host_config(tmp_path: Path, host: str, key: ec.EllipticCurvePrivateKey | None) -> Config:
    env = {**TESTING_ENV, "REX_HOST": host, "REX_ETCD": "http://e:2379"}
    config = load_config(root=tmp_path / host, environ=env)
    if key is not None:
        key_path(config).parent.mkdir(parents=True)
        key_path(config).write_bytes(key_pem(key))
    return config


def test_seal_opens_only_with_the_right_key_name_and_host() -> None:
    keys = _keys()
    box = seal.seal(VALUE, name="db", host="h1", recipient=keys["h1"].public_key())
    assert seal.open_sealed(box, name="db", host="h1", private=keys["h1"]) == VALUE
    assert VALUE not in json.dumps(box.as_json()).encode()
    with pytest.raises(SecretError, match="sealed to another key"):
        seal.open_sealed(box, name="db", host="h1", private=keys["h2"])
    for name, host in (("other", "h1"), ("db", "h2")):  # a copy moved in the store
        with pytest.raises(SecretError, match="does not open"):
            seal.open_sealed(box, name=name, host=host, private=keys["h1"])
    flipped = bytearray(box.ct)
    flipped[0] ^= 1
    tampered = seal.Sealed(box.key, box.epk, box.nonce, bytes(flipped))
    with pytest.raises(SecretError, match="altered"):
        seal.open_sealed(tampered, name="db", host="h1", private=keys["h1"])
    again = seal.seal(VALUE, name="db", host="h1", recipient=keys["h1"].public_key())
    assert again.ct != box.ct and again.epk != box.epk  # a fresh key every time


def test_each_host_opens_its_own_copy_and_nothing_is_in_clear(tmp_path: Path) -> None:
    keys = _keys()
    store = _cluster(keys, "h3")  # h3 joined but published no key
    sealed, left_out = cluster.set_secret(store, "db", VALUE)
    assert (sealed, left_out) == (["h1", "h2"], ["h3"])
    for entry in store.list(""):
        assert VALUE not in entry.value.encode() and b"s3cr3t" not in entry.value.encode()
        assert base64.b64encode(VALUE) not in entry.value.encode()
    for h in ("h1", "h2"):
        assert cluster.open_secret(store, _host_config(tmp_path, h, keys[h]), "db") == VALUE
    with pytest.raises(SecretError, match="not sealed for host h3"):
        cluster.open_secret(store, _host_config(tmp_path, "h3", None), "db")
    with pytest.raises(SecretError, match="no secret named 'nope' in the cluster"):
        cluster.open_secret(store, _host_config(tmp_path, "h4", None), "nope")
    [info] = cluster.list_secrets(store)
    assert (info.name, info.size, info.hosts) == ("db", len(VALUE), ("h1", "h2"))


def test_placement_is_refused_where_a_secret_cannot_be_opened() -> None:
    keys = _keys()
    store = _cluster(keys, "h3")
    cluster.set_secret(store, "db", VALUE)
    cluster.set_secret(store, "api", b"k")
    cluster.check_host(store, ["db", "api"], "h1")
    with pytest.raises(SecretError, match="host h3 cannot open secret db") as err:
        cluster.check_host(store, ["db", "api"], "h3")
    assert "(h1, h2)" in (err.value.hint or "")
    with pytest.raises(SecretError, match="no secret named 'gone'"):
        cluster.check_host(store, ["db", "gone"], "h1")
    # h2's key changes: its copies no longer count until sealed again
    cluster.publish(store, "h2", ec.generate_private_key(ec.SECP256R1()))
    with pytest.raises(SecretError, match="host h2 cannot open secret db"):
        cluster.check_host(store, ["db"], "h2")


def test_a_new_host_key_reseals_that_hosts_copies(tmp_path: Path) -> None:
    keys = _keys()
    store = _cluster(keys)
    cluster.set_secret(store, "db", VALUE)
    config = _host_config(tmp_path, "h2", keys["h2"])
    other = cluster._record(store, "db")["copies"]["h1"]  # type: ignore[index]
    new = ec.generate_private_key(ec.SECP256R1())

    def reissue() -> str:  # what tls.ensure does when it issues again
        key_path(config).write_bytes(key_pem(new))
        return "files"

    assert keep_sealing_key(config, store, reissue) == "files"
    assert cluster.open_secret(store, config, "db") == VALUE  # opened with the new key
    assert cluster.published(store)["h2"] == seal.spki_sha256(new)
    assert cluster._record(store, "db")["copies"]["h1"] == other  # type: ignore[index]
    cluster.check_host(store, ["db"], "h2")
    calls = []
    keep_sealing_key(config, store, lambda: calls.append(1))  # same key: nothing to do
    assert calls == [1]


def test_remove_and_no_keys_at_all() -> None:
    store = _cluster({})
    with pytest.raises(SecretError, match="no host of the cluster has published a key"):
        cluster.set_secret(store, "db", VALUE)
    keys = _keys()
    store = _cluster(keys)
    cluster.set_secret(store, "db", VALUE)
    assert cluster.remove_secret(store, "db") and not cluster.remove_secret(store, "db")
    assert store.list("secrets/") == []
