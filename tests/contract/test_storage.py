"""The storage contract, one test body for the in-memory fake and real ZFS
(zfs-fuse here; the same zfs(8) commands as OpenZFS on FreeBSD)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from rexcarcer.errors import NotFound, StorageError
from rexcarcer.run import SubprocessRunner
from rexcarcer.storage.base import Storage
from rexcarcer.storage.fake import FakeStorage
from rexcarcer.storage.zfs import ZfsStorage, serial_lock_for
from tests.integration.conftest import sh


@pytest.fixture(
    params=[
        pytest.param("fake", marks=pytest.mark.unit),
        pytest.param("zfs", marks=pytest.mark.integration),
    ]
)
def storage(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Storage]:
    if request.param == "fake":
        yield FakeStorage(tmp_path, "pool/rex")
        return
    from tests.conftest import revive_zfs

    pool = request.getfixturevalue("pool")
    revive_zfs(pool)
    parent = f"{pool}/s{uuid.uuid4().hex[:6]}"
    yield ZfsStorage(SubprocessRunner(), parent, serial_lock=serial_lock_for())
    sh("zfs", "destroy", "-r", parent, check=False)


def test_layout_datasets_and_properties(storage: Storage) -> None:
    storage.ensure_layout()
    storage.ensure_layout()  # idempotent
    mnt = storage.create("bases/bb", props={"version": "1", "id": "x"})
    (mnt / "hello").write_text("hi")
    assert storage.exists("bases/bb") and not storage.exists("bases/other")
    assert storage.get_props("bases/bb") == {"version": "1", "id": "x"}
    storage.set_props("bases/bb", {"id": "", "osrelease": "14.1-RELEASE"})  # empty: unset
    assert storage.get_props("bases/bb") == {"version": "1", "osrelease": "14.1-RELEASE"}
    [listed] = storage.datasets("bases")
    assert (listed.name, listed.origin, dict(listed.props)) == (
        "bases/bb", None, {"version": "1", "osrelease": "14.1-RELEASE"})  # fmt: skip
    assert listed.mountpoint == storage.mountpoint("bases/bb")


def test_snapshots_clones_and_their_order(storage: Storage) -> None:
    storage.ensure_layout()
    (storage.create("bases/bb") / "f").write_text("base")
    storage.snapshot("bases/bb@1")
    assert storage.exists("bases/bb@1") and storage.snapshots("bases/bb") == ["bases/bb@1"]
    root = storage.clone("bases/bb@1", "jails/web", props={"jail": "web"})
    assert (root / "f").read_text() == "base"
    (root / "f").write_text("changed")  # a clone's writes stay in the clone
    again = storage.clone("bases/bb@1", "jails/db")
    assert (again / "f").read_text() == "base"
    [web, db] = sorted(storage.datasets("jails"), key=lambda d: d.name != "jails/web")
    assert web.origin == "bases/bb@1" and web.props == {"jail": "web"} and db.origin
    with pytest.raises(StorageError):
        storage.destroy("bases/bb@1")  # has dependent clones
    storage.destroy("jails/web", recursive=True)
    storage.destroy("jails/db", recursive=True)
    storage.destroy("bases/bb", recursive=True)
    assert not storage.exists("bases/bb") and storage.datasets("bases") == []


def test_rename_and_missing_datasets(storage: Storage) -> None:
    storage.ensure_layout()
    storage.create("bases/tmp", props={"version": "2"})
    storage.snapshot("bases/tmp@2")
    storage.rename("bases/tmp", "bases/final")
    assert storage.exists("bases/final@2") and not storage.exists("bases/tmp")
    assert storage.get_props("bases/final") == {"version": "2"}
    storage.destroy("bases/nothing")  # missing_ok by default
    with pytest.raises(NotFound):
        storage.destroy("bases/nothing", missing_ok=False)


def test_plan_command_lines_are_the_drivers_own(storage: Storage) -> None:
    # rex plan shows these; both drivers render the same zfs(8) command lines
    parent = storage.parent
    clone = ["zfs", "clone", "-o", "rexcarcer:jail=web", f"{parent}/images/k@img"]
    assert storage.clone_argv("images/k@img", "jails/web", {"jail": "web"}) == [
        *clone, f"{parent}/jails/web"]  # fmt: skip
    assert storage.snapshot_argv("images/k@img") == ["zfs", "snapshot", f"{parent}/images/k@img"]
    assert storage.set_props_argvs("images/k", {"complete": "1", "x": ""}) == [
        ["zfs", "set", "rexcarcer:complete=1", f"{parent}/images/k"],
        ["zfs", "inherit", "rexcarcer:x", f"{parent}/images/k"],
    ]


def test_snapshots_have_an_identity_and_properties_of_their_own(storage: Storage) -> None:
    storage.ensure_layout()
    (storage.create("bases/bb", props={"version": "1"}) / "f").write_text("one")
    assert storage.mounted("bases/bb")
    storage.snapshot("bases/bb@1")
    storage.set_props("bases/bb@1", {"digest": "d1", "complete": "1"})
    (storage.mountpoint("bases/bb") / "f").write_text("two")
    storage.snapshot("bases/bb@2")
    storage.create("bases/bb:3")  # a base's second dataset (':' is valid in a ZFS name)
    storage.snapshot("bases/bb:3@3")
    got = storage.snapshot_details("bases")
    assert [s.name for s in got] == ["bases/bb@1", "bases/bb@2", "bases/bb:3@3"]  # oldest first
    # a snapshot's own properties, not the dataset's it would inherit
    assert [dict(s.props) for s in got] == [{"digest": "d1", "complete": "1"}, {}, {}]
    assert storage.get_props("bases/bb@1") == {"digest": "d1", "complete": "1"}
    assert len({s.guid for s in got}) == 3 and all(0 < s.guid < 2**64 for s in got)
    assert got[0].createtxg < got[1].createtxg < got[2].createtxg
    assert [s.name for s in storage.snapshot_details("bases/bb")] == ["bases/bb@1", "bases/bb@2"]
    assert storage.snapshot_details("bases/none") == []


def test_an_incremental_stream_adds_a_snapshot_with_the_same_identity(
    storage: Storage, tmp_path: Path
) -> None:
    storage.ensure_layout()
    (storage.create("bases/src") / "f").write_text("one")
    storage.snapshot("bases/src@1")
    (storage.mountpoint("bases/src") / "g").write_text("two" * 1000)
    storage.snapshot("bases/src@2")
    full, inc = tmp_path / "full", tmp_path / "inc"
    with full.open("wb") as out:
        storage.send("bases/src@1", out)
    with inc.open("wb") as out:
        storage.send("bases/src@2", out, since="bases/src@1")
    assert inc.stat().st_size < full.stat().st_size + 3000
    with full.open("rb") as stream:
        storage.receive("bases/copy", stream)
    with inc.open("rb") as stream:
        storage.receive("bases/copy", stream)  # into the existing dataset
    assert not storage.mounted("bases/copy")
    guids = {s.name: s.guid for s in storage.snapshot_details("bases")}
    assert guids["bases/copy@1"] == guids["bases/src@1"]
    assert guids["bases/copy@2"] == guids["bases/src@2"]
    with inc.open("rb") as stream, pytest.raises(StorageError):
        storage.receive("bases/copy", stream)  # its source is no longer the newest snapshot


@pytest.mark.integration
def test_zfs_a_remembered_layout_destroyed_behind_rex_is_made_again(
    pool: str, tmp_path: Path
) -> None:
    """`rex agent` remembers the layout between requests (storage/zfs.py
    LAYOUT_SEEN); another rex or an admin may destroy it meanwhile."""
    from tests.conftest import revive_zfs

    revive_zfs(pool)
    parent = f"{pool}/s{uuid.uuid4().hex[:6]}"
    seen: set[str] = set()
    try:
        first = ZfsStorage(SubprocessRunner(), parent, serial_lock=serial_lock_for(),
                           layout_seen=seen)  # fmt: skip
        first.ensure_layout()
        (first.create("bases/bb") / "f").write_text("base")
        first.snapshot("bases/bb@1")
        # by another rex: a storage that shares nothing with these two
        other = ZfsStorage(SubprocessRunner(), parent, serial_lock=serial_lock_for())
        other.destroy("jails", recursive=True)  # unmounts, retries zfs-fuse's "busy"
        assert not other.exists("jails")
        again = ZfsStorage(SubprocessRunner(), parent, serial_lock=serial_lock_for(),
                           layout_seen=seen)  # fmt: skip
        again.ensure_layout()  # remembered: no look
        root = again.clone("bases/bb@1", "jails/web")
        assert (root / "f").read_text() == "base"
        assert again.exists("jails/web") and parent in seen
    finally:
        sh("zfs", "destroy", "-r", parent, check=False)


def test_props_of_reads_datasets_and_snapshots_at_once(storage: Storage) -> None:
    storage.ensure_layout()
    storage.create("bases/bb", props={"osrelease": "14.1-RELEASE", "id": "x"})
    storage.snapshot("bases/bb@1")
    storage.set_props("bases/bb@1", {"osrelease": "14.2-RELEASE"})
    storage.clone("bases/bb@1", "jails/web", props={"jail": "web"})
    found = storage.props_of(["jails/web", "bases/bb@1", "bases/bb", "images/gone"],
                             ["osrelease", "jail"])  # fmt: skip
    assert sorted(found) == ["bases/bb", "bases/bb@1", "jails/web"]
    web, snap, base = found["jails/web"], found["bases/bb@1"], found["bases/bb"]
    assert web.mountpoint == storage.mountpoint("jails/web") and web.props == {"jail": "web"}
    assert snap.mountpoint is None and snap.props == {"osrelease": "14.2-RELEASE"}
    assert base.props == {"osrelease": "14.1-RELEASE"}  # only the props asked for
    assert storage.props_of(["images/gone"], ["osrelease"]) == {}


def test_tree_is_datasets_and_snapshot_details_in_one(storage: Storage) -> None:
    storage.ensure_layout()
    assert storage.tree("bases") == ([], [])
    storage.create("bases/bb", props={"version": "1", "osrelease": "14.1-RELEASE"})
    storage.snapshot("bases/bb@1")
    storage.set_props("bases/bb@1", {"complete": "1", "id": "one"})
    storage.snapshot("bases/bb@2")
    storage.clone("bases/bb@1", "bases/cc", props={"lineage": "bb"})  # an origin
    storage.create("bases/bb/deep")  # two levels down: neither listed
    storage.snapshot("bases/bb/deep@x")
    storage.create("images/k")  # another kind
    datasets, snapshots = storage.tree("bases")
    assert (datasets, snapshots) == (storage.datasets("bases"), storage.snapshot_details("bases"))
    assert [d.name for d in datasets] == ["bases/bb", "bases/cc"]
    assert [s.name for s in snapshots] == ["bases/bb@1", "bases/bb@2"]
    assert datasets[1].origin == "bases/bb@1"
    assert snapshots[0].props == {"complete": "1", "id": "one"}
