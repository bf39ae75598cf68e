"""`rex state rebuild` on the in-memory drivers: the record copied onto each jail's
dataset at every write, its property encoding, malformed properties, and the
whole rebuild (records, generations, address claims, DNS, certificates) after
the store is lost. tests/integration/test_faults_rebuild.py does it for real."""

from __future__ import annotations

import base64
import json
import os
import zlib
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from rexcarcer import ipam
from rexcarcer.cli.main import build_cli
from rexcarcer.engine import jails, lifecycle, persist, rebuild, update
from rexcarcer.engine.base import Engine
from rexcarcer.errors import RebuildIncomplete, RebuildRefused, StateError
from rexcarcer.model import keys, recordprop
from rexcarcer.model.jail import Desired, JailRecord, Status
from rexcarcer.pki import registry
from rexcarcer.rexfile.parser import parse
from rexcarcer.state import records
from rexcarcer.state.base import Delete, Put, Store
from rexcarcer.storage import zfs
from rexcarcer.storage.base import Dataset
from rexcarcer.storage.fake import FakeStorage
from tests.schemas import validate
from tests.unit.fakes import FakeCtx, fake_ctx, fake_engine, fake_runtime, rex
from tests.unit.test_plan import is_record_copy

pytestmark = pytest.mark.unit

DATA = Path(__file__).parent.parent / "data" / "zfs"


# -- the property encoding --------------------------------------------------------------


def _rec(**changes: Any) -> JailRecord:
    base = JailRecord(name="web", host="h1", status=Status.READY, image="images/k@img",
                      hostname="web.example.com", generation=2, created=1764380000)  # fmt: skip
    return base.replace(**changes)


def test_a_small_record_is_plain_json_and_reads_back_equal() -> None:
    rec = _rec(env=(("A", "b"),))
    props = recordprop.encode(rec)
    assert list(props) == ["record"] and props["record"].startswith("{")
    assert recordprop.decode(props) == rec


def test_a_large_record_is_compressed_and_a_huge_one_split_into_parts() -> None:
    big = _rec(env=tuple((f"K{i}", "v" * 40) for i in range(400)))  # compressible
    props = recordprop.encode(big)
    assert props["record"].startswith("z:") and len(props["record"]) <= recordprop.CHUNK
    assert recordprop.decode(props) == big
    noise = base64.b64encode(os.urandom(12000)).decode()  # does not compress
    huge = _rec(env=(("NOISE", noise),))
    props = recordprop.encode(huge)
    assert props["record"] == "parts:3" and set(props) == {"record", "record.1", "record.2",
                                                           "record.3"}  # fmt: skip
    assert all(len(v) <= recordprop.CHUNK for v in props.values())
    assert recordprop.decode(props) == huge
    # stale parts of an earlier, longer record do not matter: the head says how many
    assert recordprop.decode({**recordprop.encode(big), "record.3": "junk"}) == big


def test_a_record_too_large_for_its_dataset_is_refused() -> None:
    noise = base64.b64encode(os.urandom(60000)).decode()
    with pytest.raises(StateError, match="too large to keep on its dataset"):
        recordprop.encode(_rec(env=(("NOISE", noise),)))


def _z(raw: bytes) -> str:
    return "z:" + base64.b64encode(zlib.compress(raw)).decode()


@pytest.mark.parametrize(("props", "reason"), [
    ({}, "no rexcarcer:record property"),
    ({"record": "{not json"}, "not JSON"),
    ({"record": "[1, 2]"}, "not a JSON object"),
    ({"record": '{"schema": 99, "name": "web"}'}, "has schema 99"),
    ({"record": '{"schema": 3, "name": "web", "status": "exploded"}'}, "malformed jail record"),
    ({"record": '{"schema": 3, "name": "web", "services": [{"name": "s", "port": 0}]}'},
     "bad port"),
    ({"record": '{"schema": 3, "name": "web", "address": "999.1.1.1/24"}'},
     "malformed jail record"),
    ({"record": "parts:2", "record.1": '{"name":'}, "record.2 is missing"),
    ({"record": "parts:99"}, "bad part count"),
    ({"record": "parts:x"}, "bad part count"),
    ({"record": "z:!!!"}, "bad compressed value"),
    ({"record": _z(b" " * (2 << 20))}, "larger than"),  # a bomb: 2 MiB of blanks
    ({"record": _z(b"\xff\xfe")}, "not UTF-8"),
])  # fmt: skip
def test_malformed_properties_are_refused_with_the_reason(
    props: dict[str, str], reason: str
) -> None:
    with pytest.raises(ValueError, match=reason):
        recordprop.decode(props)


def test_a_record_must_be_its_datasets_jail_and_generation() -> None:
    props = recordprop.encode(_rec(status=Status.UPDATING, pid=42, replacing=1))
    assert recordprop.for_dataset("jails/web", props).pid == 42
    with pytest.raises(ValueError, match="names jail 'web'"):
        recordprop.for_dataset("jails/db", props)
    kept = recordprop.for_dataset("generations/web.2", props)
    assert kept.status is Status.READY and kept.pid is None and kept.replacing == 0
    with pytest.raises(ValueError, match="generation 2 of jail 'web'"):
        recordprop.for_dataset("generations/web.1", props)
    bad = recordprop.encode(_rec(name="../etc"))
    with pytest.raises(ValueError, match=r"its record names no valid jail: '\.\./etc' contains"):
        recordprop.for_dataset("jails/../etc", bad)


def test_read_skips_bad_datasets_and_keeps_the_others() -> None:
    good, other = _rec(), _rec(name="db", hostname="", address=None)
    twin = _rec(name="twin").replace(address=good.address)
    addr = _rec(name="a1").replace(address=parse("BASE bb\nIP 203.0.113.9/24\n").ip)
    clash = _rec(name="a2").replace(address=addr.address)
    lost = _rec(name="lost", generation=1)
    rows = [
        Dataset("jails/web", Path("/m/web"), None, recordprop.encode(good)),
        Dataset("jails/db", None, None, recordprop.encode(other)),
        Dataset("jails/bad", None, None, {"record": "{"}),
        Dataset("jails/old", None, None, {"jail": "old"}),
        Dataset("jails/gone", None, None, {**recordprop.encode(_rec(name="gone")), "moved": "h2"}),
        Dataset("jails/twin", None, None, recordprop.encode(twin)),
        Dataset("jails/a1", None, None, recordprop.encode(addr)),
        Dataset("jails/a2", None, None, recordprop.encode(clash)),
        Dataset("generations/web.1", None, None, recordprop.encode(good.replace(generation=1))),
        Dataset("generations/lost.1", None, None, recordprop.encode(lost)),
    ]
    found = rebuild.read(rows)
    assert [r.name for r in found.current] == ["a1", "db", "twin", "web"]
    assert [(r.name, r.generation) for r in found.kept] == [("web", 1)]
    reasons = {s.dataset: s.reason for s in found.skipped}
    assert reasons == {
        "jails/a2": "its address 203.0.113.9 is in the record of jail a1 too",
        "jails/bad": reasons["jails/bad"],
        "jails/old": "no rexcarcer:record property",
        "jails/gone": "moved to host h2: the jail lives there",
        "generations/lost.1": "a kept generation of jail lost, which has no dataset "
        "jails/lost with a good record",
    }
    assert reasons["jails/bad"].startswith("rexcarcer:record is not JSON")
    assert found.roots["web"] == Path("/m/web")


# -- zfs: one command reads them all ------------------------------------------------------


def test_props_below_reads_every_jail_and_generation_in_one_zfs_get() -> None:
    argv = zfs.props_below_argv(["tank/s/jails", "tank/s/generations"], ["record", "moved"])
    assert argv == ["zfs", "get", "-Hp", "-r", "-d", "1", "-o", "name,property,value,source",
                    "mountpoint,rexcarcer:record,rexcarcer:moved", "tank/s/jails",
                    "tank/s/generations"]  # fmt: skip
    got = zfs.parse_props_below((DATA / "get-props-below.txt").read_text(), "tank/s")
    assert [d.name for d in got] == ["generations/web.1", "jails/db", "jails/web"]
    gen, db, web = got
    assert web.mountpoint == Path("/var/lib/rexcarcer/mnt/s/s/jails/web")
    assert json.loads(web.props["record"])["name"] == "web"
    assert db.props == {}  # inherited and unset ones are not the dataset's own
    assert gen.props["record"].startswith("{") and gen.mountpoint is not None


# -- every write of a record is copied onto its dataset ---------------------------------------


def _on_dataset(eng: Engine, name: str) -> JailRecord:
    return recordprop.decode(eng.host.storage.get_props(f"jails/{name}"))


def _up(eng: Engine, tmp_path: Path, body: str, name: str = "app") -> None:
    jails.up(eng, parse("BASE bb\n" + body, path=tmp_path / "app.rex"), name)


def test_the_dataset_keeps_the_record_through_up_update_stop_start_rollback(
    tmp_path: Path,
) -> None:
    eng = fake_engine(tmp_path)
    store = eng.host.store

    def same() -> None:
        current = records.get_jail(store, "app")
        assert current is not None and _on_dataset(eng, "app") == current
        for gen in records.generations(store, "app"):
            kept = eng.host.storage.get_props(update.kept("app", gen.generation))
            assert recordprop.for_dataset(f"generations/app.{gen.generation}", kept) == gen

    _up(eng, tmp_path, "ENV A=1\n")
    same()
    lifecycle.stop(eng, "app")
    same()
    assert _on_dataset(eng, "app").desired is Desired.STOPPED
    lifecycle.start(eng, "app")
    same()
    _up(eng, tmp_path, "ENV A=2\n")  # generation 2
    same()
    update.rollback(eng, "app")
    same()
    assert _on_dataset(eng, "app").generation == 1


def test_a_new_jail_gets_its_record_with_its_clone_and_nothing_is_set_after_its_start(
    tmp_path: Path,
) -> None:
    eng = fake_engine(tmp_path)
    storage = eng.host.storage
    assert isinstance(storage, FakeStorage)
    storage.calls.clear()
    _up(eng, tmp_path, "ENV A=1\n")
    (clone,) = [c for c in storage.calls if c[:2] == ["zfs", "clone"] and "jails/app" in c[-1]]
    assert any(a.startswith("rexcarcer:record=") for a in clone), clone
    assert not any(is_record_copy(c) for c in storage.calls), storage.calls
    current = records.get_jail(eng.host.store, "app")
    assert current is not None and current.status is Status.READY and current.pid is None
    assert _on_dataset(eng, "app") == current


def test_a_record_the_start_changed_is_copied_again(tmp_path: Path) -> None:
    eng = fake_engine(tmp_path)
    _up(eng, tmp_path, "")
    storage = eng.host.storage
    assert isinstance(storage, FakeStorage)
    rec = records.get_jail(eng.host.store, "app")
    assert rec is not None
    storage.calls.clear()
    persist.put_over(eng.host, rec, rec)  # the copy the clone carries is this record
    assert storage.calls == []
    moved = rec.replace(hostname="moved.example.com")
    persist.put_over(eng.host, moved, rec)
    assert [c[:3] for c in storage.calls] == [["zfs", "set", storage.calls[0][2]]]
    assert is_record_copy(storage.calls[0])
    assert _on_dataset(eng, "app") == moved == records.get_jail(eng.host.store, "app")


# -- the whole rebuild ----------------------------------------------------------------------


def _wipe(store: Store) -> None:
    """The store lost: every key gone."""
    store.commit([], [Delete(e.key) for e in store.list("")])


def _snapshot(ctx: FakeCtx) -> dict[str, Any]:
    store = ctx.eng.host.store
    listing = rex(ctx, "ls")
    return {
        "ls": listing,
        "dns": rex(ctx, "dns", "ls"),
        "ipam": ipam.taken(store),
        "certs": {j["name"]: rex(ctx, "ca", "show", j["name"]) for j in listing},
        "registry": sorted(registry.issued(store), key=lambda r: str(r["jail"])),
        "history": {j["name"]: rex(ctx, "history", j["name"]) for j in listing},
        "names": sorted(e.key for e in store.list(keys.NAMES)),
    }


def _failing(ctx: FakeCtx, *args: str) -> tuple[BaseException | None, str]:
    """``rex -o json state ARGS`` expected to fail: its error and its stdout."""
    done = CliRunner().invoke(build_cli().commands["state"], list(args), obj=ctx)
    return done.exception, done.stdout


@pytest.fixture
def ctx(tmp_path: Path) -> FakeCtx:
    c = fake_ctx(tmp_path)
    web = tmp_path / "web" / "web.rex"
    rex(c, "up", str(web))
    (tmp_path / "web" / "db.rex").write_text("BASE bb\nVOLUME data /var/db 64M\nSERVICE pg PORT "
                                            "5432\n")  # fmt: skip
    rex(c, "up", str(tmp_path / "web" / "db.rex"))
    (tmp_path / "web" / "api.rex").write_text("BASE bb\nENV V=1\n")
    rex(c, "up", str(tmp_path / "web" / "api.rex"))
    (tmp_path / "web" / "api.rex").write_text("BASE bb\nENV V=2\n")
    rex(c, "up", str(tmp_path / "web" / "api.rex"))  # generation 2
    lifecycle.stop(c.eng, "db")
    return c


def test_rebuild_after_the_store_is_lost_gives_the_same_listings(ctx: FakeCtx) -> None:
    before = _snapshot(ctx)
    assert before["history"]["api"][0]["generation"] == 1 and len(before["certs"]) == 3
    running = set(fake_runtime(ctx.eng.host).running)
    _wipe(ctx.eng.host.store)
    assert rex(ctx, "ls") == []
    out = rex(ctx, "state", "rebuild")
    validate("state-rebuild", out)
    assert out["jails"] == ["api", "db", "web"] and out["running"] == ["api", "web"]
    assert out["generations"] == [{"jail": "api", "generation": 1}]
    assert out["skipped"] == [] and out["notes"] == [] and out["damaged"] is None
    assert _snapshot(ctx) == before
    assert set(fake_runtime(ctx.eng.host).running) == running  # nothing started or stopped


def test_rebuild_refuses_a_store_with_records_unless_forced(ctx: FakeCtx) -> None:
    before = _snapshot(ctx)
    store = ctx.eng.host.store
    with pytest.raises(RebuildRefused, match="already holds 3 jail record"):
        rebuild.rebuild(ctx.eng)
    err, out = _failing(ctx, "rebuild")
    assert isinstance(err, RebuildRefused) and err.exit_code == 83 and out == ""
    # a stale store (an old backup put back): --force replaces the jail keys, keeps the rest
    store.commit(
        [],
        [
            Put(keys.jail_key("ghost"), json.dumps(_rec(name="ghost").as_json())),
            Put(f"{keys.PKI_REVOKED}abc", '{"serial": "abc"}'),
            Put(f"{keys.IPAM}203.0.113.200", '{"jail": "ghost", "host": "h1"}'),
        ],
    )
    out = rex(ctx, "state", "rebuild", "--force")
    assert out["cleared"] > 0 and out["jails"] == ["api", "db", "web"]
    assert _snapshot(ctx) == before
    assert store.get(f"{keys.PKI_REVOKED}abc") is not None


def test_a_malformed_dataset_is_skipped_and_named_the_others_rebuilt(ctx: FakeCtx) -> None:
    storage = ctx.eng.host.storage
    storage.set_props("jails/db", {"record": '{"schema": 3, "name": "db", "status": "x"}'})
    _wipe(ctx.eng.host.store)
    err, text = _failing(ctx, "rebuild")
    assert isinstance(err, RebuildIncomplete) and err.exit_code == 84
    assert "1 dataset(s) skipped, the others rebuilt: jails/db: malformed" in err.message
    out = json.loads(text)
    assert out["jails"] == ["api", "web"]
    assert out["skipped"][0]["dataset"] == "jails/db"
    assert "malformed jail record 'db'" in out["skipped"][0]["reason"]
    assert [j["name"] for j in rex(ctx, "ls")] == ["api", "web"]


def test_a_certificate_a_jail_swapped_in_is_not_recorded(ctx: FakeCtx) -> None:
    host = ctx.eng.host
    web_root = host.storage.mountpoint("jails/web")
    api_root = host.storage.mountpoint("jails/api")
    # root in api puts web's certificate (signed by the jail CA, not api's names) in place
    (api_root / "etc/ssl/rc/host.crt").write_bytes((web_root / "etc/ssl/rc/host.crt").read_bytes())
    (web_root / "etc/ssl/rc/host.crt").write_text("-----BEGIN CERTIFICATE-----\nbad\n")
    _wipe(host.store)
    out = rex(ctx, "state", "rebuild")
    notes = {n["jail"]: n["note"] for n in out["notes"]}
    assert "other names or addresses" in notes["api"]
    assert "holds no PEM certificate" in notes["web"]
    assert [r["jail"] for r in registry.issued(host.store)] == ["db"]
    lifecycle.restart(ctx.eng, "api")  # its next start issues a new one
    assert registry.current(host.store, "api") is not None


def test_a_kept_generation_comes_back_for_rollback(ctx: FakeCtx) -> None:
    _wipe(ctx.eng.host.store)
    rex(ctx, "state", "rebuild")
    update.rollback(ctx.eng, "api")
    rec = records.get_jail(ctx.eng.host.store, "api")
    assert rec is not None and rec.generation == 1 and dict(rec.env) == {"V": "1"}


def test_a_damaged_state_db_is_set_aside_first(ctx: FakeCtx) -> None:
    db = ctx.config.db_path
    db.parent.mkdir(parents=True, exist_ok=True)
    db.write_bytes(b"this is not a database" * 100)
    _wipe(ctx.eng.host.store)  # the fake's store stands for the new, empty state.db
    out = rex(ctx, "state", "rebuild")
    assert out["damaged"] is not None and ".damaged-" in out["damaged"]
    assert Path(out["damaged"]).read_bytes().startswith(b"this is not")
    assert not db.exists() and out["jails"] == ["api", "db", "web"]
