"""Volumes and updates in place on the in-memory drivers: the same behaviour
tests/integration/test_update.py checks on real ZFS and namespaces."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from rexcarcer.engine import jails, update
from rexcarcer.engine import volumes as vol
from rexcarcer.engine.base import Engine
from rexcarcer.engine.plan import plan_up
from rexcarcer.errors import Conflict, NotFound, RexfileError, UpdateFailed
from rexcarcer.model.jail import JailRecord, Status, VolumeEntry
from rexcarcer.rexfile.parser import parse
from rexcarcer.state import records
from tests.unit.fakes import fake_engine, fake_runtime


@pytest.fixture
def eng(tmp_path: Path) -> Engine:
    return fake_engine(tmp_path)


def rex(tmp_path: Path, body: str) -> object:
    return parse("BASE bb\n" + body, path=tmp_path / "app.rex")


def up(eng: Engine, tmp_path: Path, body: str, name: str = "app") -> object:
    return jails.up(eng, parse("BASE bb\n" + body, path=tmp_path / "app.rex"), name)


# -- the language ------------------------------------------------------------------------


@pytest.mark.parametrize(("line", "message"), [
    ("VOLUME data", "expected a path inside the jail"),
    ("VOLUME Data /x", "bad volume name"),
    ("VOLUME data x", "not an absolute path"),
    ("VOLUME data /a/../b", "contains '..'"),
    ("VOLUME data /", "jail's root"),
    ("VOLUME data /dev/x", "under /dev"),
    ("VOLUME data /etc/ssl/rc", "under /etc/ssl/rc"),
    ("VOLUME data /x 10Q", "not a size"),
    ("VOLUME data /x 10K", "below the minimum"),
    ("VOLUME data '/my data'", "blank"),
    ("VOLUME a /x\nVOLUME a /y", "declared twice"),
    ("VOLUME a /x\nVOLUME b /x", "both mounted on /x"),
    ("VOLUME a /x\nVOLUME b /x/y", "inside volume a"),
])  # fmt: skip
def test_bad_volumes_are_refused_with_their_position(line: str, message: str) -> None:
    with pytest.raises(RexfileError, match=message) as err:
        parse("BASE bb\n" + line, file="app.rex")
    assert err.value.file == "app.rex" and err.value.line >= 2


def test_a_file_without_volumes_keeps_its_digest() -> None:
    assert "volumes" not in parse("BASE bb\n").canonical()
    rf = parse("BASE bb\nVOLUME data /var/db/app/ 10G\n")
    assert rf.volumes[0].path == "/var/db/app" and rf.volumes[0].size == 10 << 30


# -- volumes ----------------------------------------------------------------------------


def test_a_volume_is_made_mounted_and_kept_across_destroy(eng: Engine, tmp_path: Path) -> None:
    up(eng, tmp_path, "VOLUME data /var/db/app 64M\n")
    host = eng.host
    ds = vol.dataset("app", "data")
    assert host.storage.get_props(ds)["path"] == "/var/db/app"
    assert host.storage.quotas[ds] == 64 << 20  # type: ignore[attr-defined]
    spec = fake_runtime(host).running["app"]
    assert spec.mounts == ((host.storage.mountpoint(ds), "/var/db/app"),)
    assert (spec.root / "var/db/app").is_dir()  # the mount point, made inside the jail
    (host.storage.mountpoint(ds) / "kept").write_text("data")
    assert jails.destroy(eng, "app") == ["data"]
    assert host.storage.exists(ds)
    up(eng, tmp_path, "VOLUME data /var/db/app 64M\n")  # attached again
    assert (host.storage.mountpoint(ds) / "kept").read_text() == "data"
    assert jails.destroy(eng, "app", with_volumes=True) == []
    assert not host.storage.exists(ds)


def test_a_volume_path_through_a_symlink_stays_inside(eng: Engine, tmp_path: Path) -> None:
    # the image links /srv to /etc/../.. (out of the root, read as the jail would)
    up(eng, tmp_path, "")
    root = eng.host.storage.mountpoint("jails/app")
    jails.destroy(eng, "app")
    base = eng.host.storage.mountpoint("bases/bb")
    os.symlink("/", base / "srv")
    eng.host.storage.destroy("bases/bb@1")
    eng.host.storage.snapshot("bases/bb@1")
    up(eng, tmp_path, "VOLUME data /srv/data\n")
    spec = fake_runtime(eng.host).running["app"]
    assert spec.mounts[0][1] == "/data"  # /srv -> / inside the jail
    assert not (root.parent / "data").exists()


def test_volume_mistakes_change_nothing(eng: Engine, tmp_path: Path) -> None:
    up(eng, tmp_path, "VOLUME data /var/db/app\n")
    jails.destroy(eng, "app")
    with pytest.raises(Conflict, match="mounted at /var/db/app"):
        up(eng, tmp_path, "VOLUME data /elsewhere\n")
    assert jails.record(eng, "app") is None
    ds = vol.dataset("app", "data")
    (eng.host.storage.mountpoint(ds) / "big").write_bytes(b"x" * (2 << 20))
    with pytest.raises(Conflict, match="more than the size 1M"):
        up(eng, tmp_path, "VOLUME data /var/db/app 1M\n")
    assert jails.record(eng, "app") is None


def test_a_failed_first_up_removes_the_volumes_it_made(eng: Engine, tmp_path: Path) -> None:
    fake_runtime(eng.host).fail_start.add("app")
    with pytest.raises(Exception, match="failed to start"):
        up(eng, tmp_path, "VOLUME data /var/db/app\n")
    assert not eng.host.storage.exists(vol.dataset("app", "data"))


# -- updates -------------------------------------------------------------------------------


def test_a_changed_definition_is_the_next_generation(eng: Engine, tmp_path: Path) -> None:
    first = up(eng, tmp_path, "PROVISION RUN echo one\nVOLUME data /data\n")
    host = eng.host
    (host.storage.mountpoint(vol.dataset("app", "data")) / "f").write_text("kept")
    root = host.storage.mountpoint("jails/app")
    (root / "etc/ssl/rc").mkdir(parents=True)
    (root / "etc/ssl/rc/host.key").write_text("the key")
    plan = plan_up(eng, rex(tmp_path, "PROVISION RUN echo two\nVOLUME data /data\n"), "app")
    assert plan[-1].kind == "replace" and "step 1 changed" in plan[-1].description
    second = up(eng, tmp_path, "PROVISION RUN echo two\nVOLUME data /data\n")
    assert second.address == first.address and second.state == "running"  # type: ignore[attr-defined]
    rec = jails.record(eng, "app")
    assert rec is not None and rec.generation == 2 and rec.status is Status.READY
    assert host.storage.exists("generations/app.1")
    new_root = host.storage.mountpoint("jails/app")
    assert (new_root / "etc/ssl/rc/host.key").read_text() == "the key"  # same identity
    assert (host.storage.mountpoint(vol.dataset("app", "data")) / "f").read_text() == "kept"
    assert [s.startswith("gen1-") for s in host.storage.snapshots(vol.dataset("app", "data"))]
    assert [g.generation for g in update.history(eng, "app")] == [1, 2]


def test_an_update_that_does_not_start_rolls_back(eng: Engine, tmp_path: Path) -> None:
    up(eng, tmp_path, "PROVISION RUN echo one\n")
    runtime = fake_runtime(eng.host)
    runtime.fail_next = 1  # the new generation does not start; the old one does again
    with pytest.raises(UpdateFailed, match="rolled back to generation 1") as err:
        up(eng, tmp_path, "PROVISION RUN echo two\n")
    assert err.value.exit_code == 45
    rec = jails.record(eng, "app")
    assert rec is not None and rec.generation == 1 and rec.status is Status.READY
    assert "app" in runtime.running
    assert not eng.host.storage.exists("generations/app.1")
    assert records.generations(eng.host.store, "app") == []


def test_rollback_and_the_generations_kept(eng: Engine, tmp_path: Path) -> None:
    with pytest.raises(NotFound, match="no earlier generation"):
        up(eng, tmp_path, "PROVISION RUN echo 1\n")
        update.rollback(eng, "app")
    for i in (2, 3, 4):
        up(eng, tmp_path, f"PROVISION RUN echo {i}\n")
    assert [g.generation for g in records.generations(eng.host.store, "app")] == [2, 3]
    info = update.rollback(eng, "app")
    assert info.state == "running"
    rec = jails.record(eng, "app")
    assert rec is not None and rec.generation == 3
    assert [g.generation for g in records.generations(eng.host.store, "app")] == [2, 4]
    update.rollback(eng, "app", to=2)
    assert (jails.record(eng, "app") or rec).generation == 2
    up(eng, tmp_path, "PROVISION RUN echo 5\n")
    assert (jails.record(eng, "app") or rec).generation == 5  # never reuses a number
    # the update kept what it replaced (2, though the oldest by number) and the
    # one current before it (3); 4 stopped being current longest ago
    assert [g.generation for g in records.generations(eng.host.store, "app")] == [2, 3]
    assert eng.host.storage.exists("generations/app.2")
    assert not eng.host.storage.exists("generations/app.4")
    update.rollback(eng, "app")  # back to what the update replaced
    assert (jails.record(eng, "app") or rec).generation == 2
    assert [h.generation for h in update.history(eng, "app")] == [2, 3, 5]


def test_an_interrupted_update_goes_back(eng: Engine, tmp_path: Path) -> None:
    up(eng, tmp_path, "PROVISION RUN echo one\n")
    old = jails.record(eng, "app")
    assert old is not None
    host = eng.host
    # as if killed after the switch: old generation put aside, the new one in place
    records.put_generation(host.store, old)
    host.storage.rename("jails/app", "generations/app.1")
    host.storage.clone("bases/bb@1", "jails/app", props={"jail": "app", "generation": "2"})
    records.put_jail(host.store, old.replace(status=Status.UPDATING, generation=2, replacing=1,
                                             pid=999999999, pid_start=1))  # fmt: skip
    fake_runtime(host).running.pop("app")
    info = up(eng, tmp_path, "PROVISION RUN echo one\n")  # the same file: nothing more to do
    rec = jails.record(eng, "app")
    assert rec is not None and rec.generation == 1 and info.state == "running"  # type: ignore[attr-defined]
    assert not host.storage.exists("generations/app.1")


def test_a_killed_creation_takes_the_volumes_it_made_and_keeps_older_ones(
    eng: Engine, tmp_path: Path
) -> None:
    up(eng, tmp_path, "VOLUME data /data\n")
    jails.destroy(eng, "app")  # the volume is kept
    assert vol.of_jail(eng.host, "app") == ["data"]
    # a `rex up` of a new life, killed after it made its second volume
    claim = JailRecord(name="app", host=eng.host.config.host, status=Status.CREATING,
                       pid=999999999, pid_start=1.0, created=1,
                       volumes=(VolumeEntry("data", "/data", None),
                                VolumeEntry("logs", "/logs", None)))  # fmt: skip
    records.put_jail(eng.host.store, claim)
    assert vol.create_missing(eng.host, claim) == ["volumes/app.logs"]
    assert vol.made_by(eng.host, claim) == ["logs"]
    assert jails.recover(eng, "app")  # what the agent's tick does
    assert jails.record(eng, "app") is None
    assert vol.of_jail(eng.host, "app") == ["data"]  # the earlier life's stays
