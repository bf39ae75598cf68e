"""ZFS driver: argv built, output parsed (saved from zfs-fuse), quirks retried."""

from __future__ import annotations

from pathlib import Path

import pytest

from rexcarcer.errors import StorageError
from rexcarcer.run import Completed, ScriptedRunner
from rexcarcer.storage import zfs
from rexcarcer.storage.base import LAYOUT
from rexcarcer.storage.zfs import Capabilities, ZfsStorage

DATA = Path(__file__).parent.parent / "data" / "zfs"


def test_parse_children_on_saved_output() -> None:
    text = (DATA / "list-children.txt").read_text()
    got = zfs.parse_children(text, "tank/s", ["jail", "created"])
    assert [d.name for d in got] == ["jails/c1", "jails/plain", "jails/web"]
    c1, plain, web = got
    assert c1.origin == "jails/web@x" and c1.props == {"jail": "c1"}
    assert plain.props == {} and plain.origin is None
    assert web.props == {"jail": "web", "created": "1764380000"}
    assert web.mountpoint == Path("/var/lib/rexcarcer/mnt/s/jails/web")


def test_parse_get_skips_unset_user_properties() -> None:
    assert zfs.parse_get((DATA / "get-unset.txt").read_text()) == {"rexcarcer:jail": "web"}
    assert zfs.parse_get((DATA / "get-local.txt").read_text()) == {
        "rexcarcer:jail": "web",
        "rexcarcer:created": "1764380000",
    }


def _storage(runner: ScriptedRunner, openzfs: bool = False) -> ZfsStorage:
    return ZfsStorage(runner, "tank/rex", caps=Capabilities(openzfs=openzfs))


def test_clone_sets_user_properties_and_reads_the_mountpoint() -> None:
    r = ScriptedRunner()
    r.on(["zfs", "get", "-Hp", "-o", "value", "mountpoint"], "/tank/rex/jails/web\n")
    mnt = _storage(r).clone("images/abc@img", "jails/web", props={"jail": "web"})
    assert mnt == Path("/tank/rex/jails/web")
    assert r.calls[0] == (
        "zfs", "clone", "-o", "rexcarcer:jail=web", "tank/rex/images/abc@img", "tank/rex/jails/web",
    )  # fmt: skip


def test_set_props_one_property_per_call_and_empty_means_inherit() -> None:
    r = ScriptedRunner()
    _storage(r).set_props("bases/bb", {"version": "1", "osrelease": ""})
    assert r.calls == [
        ("zfs", "set", "rexcarcer:version=1", "tank/rex/bases/bb"),
        ("zfs", "inherit", "rexcarcer:osrelease", "tank/rex/bases/bb"),
    ]


@pytest.mark.parametrize(("openzfs", "compression"), [(True, "lz4"), (False, "on")])
def test_layout_uses_capabilities(openzfs: bool, compression: str) -> None:
    r = ScriptedRunner()
    r.on(["zfs", "list", "-H", "-o", "name,mountpoint", "-r", "-d", "1", "tank/rex"],
         Completed((), 1, "", "cannot open 'tank/rex': dataset does not exist"))  # fmt: skip
    _storage(r, openzfs).ensure_layout()
    assert r.calls[1] == (
        "zfs", "create", "-p", "-o", f"compression={compression}", "-o", "atime=off", "tank/rex",
    )  # fmt: skip
    assert [c[-1] for c in r.calls[2:]] == [f"tank/rex/{kind}" for kind in LAYOUT]


def test_destroy_unmounts_then_retries_busy() -> None:
    r = ScriptedRunner()
    r.on(["zfs", "list", "-H", "-o", "name,mounted"], "tank/rex/jails/web\tyes\n")
    attempts = iter([Completed((), 1, "", "cannot destroy: dataset is busy"), Completed((), 0)])
    r.on(["zfs", "destroy"], lambda argv: next(attempts))
    _storage(r).destroy("jails/web", recursive=True)
    assert ("zfs", "umount", "tank/rex/jails/web") in r.calls
    assert r.calls.count(("zfs", "destroy", "-r", "tank/rex/jails/web")) == 2


def test_destroy_reports_other_errors_at_once() -> None:
    r = ScriptedRunner()
    r.on(["zfs", "destroy"], Completed((), 1, "", "cannot destroy: snapshot has dependent clones"))
    with pytest.raises(StorageError, match="dependent clones"):
        _storage(r).destroy("images/x@img")
    assert sum(1 for c in r.calls if c[1] == "destroy") == 1


@pytest.mark.parametrize("bad", ["", "/abs", "a/../b", "@snap"])
def test_names_cannot_leave_the_parent(bad: str) -> None:
    with pytest.raises(StorageError):
        _storage(ScriptedRunner()).full(bad)


def test_mounting_commands_are_serialised_on_zfs_fuse(tmp_path: Path) -> None:
    """zfs-fuse deadlocks on concurrent mounting commands: they take one machine-wide
    flock; reads do not, and OpenZFS (with /dev/zfs) takes none."""
    import fcntl

    from rexcarcer.storage.zfs import serial_lock_for

    assert serial_lock_for(tmp_path / "no-dev-zfs") is not None
    (tmp_path / "zfs").touch()
    assert serial_lock_for(tmp_path / "zfs") is None

    lock = tmp_path / "locks" / "zfs-fuse.lock"
    held: list[tuple[str, bool]] = []

    def probe(argv: tuple[str, ...]) -> Completed:
        with lock.open("w") as fd:  # free unless the driver holds it
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                held.append((argv[1], False))
            except BlockingIOError:
                held.append((argv[1], True))
        return Completed(argv, 0, "/mnt/x\n" if argv[1] == "get" else "")

    lock.parent.mkdir()
    runner = ScriptedRunner()
    runner.on(["zfs"], probe)
    storage = ZfsStorage(runner, "tank/rex", caps=Capabilities(openzfs=False), serial_lock=lock)
    storage.clone("images/a@img", "jails/web")
    storage.snapshot("images/a@x")
    assert held[0] == ("clone", True)  # then `zfs get mountpoint`: no lock
    assert ("get", False) in held and ("snapshot", False) in held


LIST_LAYOUT = ("zfs", "list", "-H", "-o", "name,mountpoint", "-r", "-d", "1", "tank/rex")
WHOLE = "tank/rex\n" + "".join(f"tank/rex/{kind}\n" for kind in LAYOUT)


def _remembering(runner: ScriptedRunner, seen: set[str]) -> ZfsStorage:
    return ZfsStorage(runner, "tank/rex", caps=Capabilities(openzfs=True), layout_seen=seen)


def test_a_layout_seen_whole_is_not_listed_again_in_the_process() -> None:
    seen: set[str] = set()
    r = ScriptedRunner(strict=True)
    r.on(list(LIST_LAYOUT), WHOLE)
    _remembering(r, seen).ensure_layout()
    _remembering(r, seen).ensure_layout()  # the agent's next request: a new storage
    assert r.calls == [LIST_LAYOUT] and seen == {"tank/rex"}
    # a storage without the memo (tests, tools) always looks
    _storage(r).ensure_layout()
    _storage(r).ensure_layout()
    assert r.calls.count(LIST_LAYOUT) == 3


def test_a_clone_that_finds_the_remembered_layout_gone_makes_it_and_runs_again() -> None:
    seen = {"tank/rex"}  # seen by an earlier request; destroyed since by someone else
    r = ScriptedRunner()
    r.on(list(LIST_LAYOUT), "tank/rex\n")  # only the parent is left
    clones = iter([Completed((), 1, "", "cannot create 'tank/rex/jails/web': parent does not "
                              "exist"), Completed((), 0)])  # fmt: skip
    r.on(["zfs", "clone"], lambda argv: next(clones))
    r.on(["zfs", "list", "-H", "-o", "name", "-t", "all"], Completed((), 1, "", "no such"))
    r.on(["zfs", "get", "-Hp", "-o", "value", "mountpoint"], "/mnt/rex/jails/web\n")
    s = _remembering(r, seen)
    s.ensure_layout()
    assert r.calls == []
    assert s.clone("images/k@img", "jails/web") == Path("/mnt/rex/jails/web")
    made = [c[-1] for c in r.calls if c[:2] == ("zfs", "create")]
    assert made == [f"tank/rex/{kind}" for kind in LAYOUT]
    assert [c[:2] for c in r.calls].count(("zfs", "clone")) == 2
    assert seen == {"tank/rex"}  # seen whole again


def test_a_clone_that_fails_without_a_remembered_layout_is_not_retried() -> None:
    r = ScriptedRunner()
    r.on(["zfs", "clone"], Completed((), 1, "", "cannot open 'tank/rex/images/k@img': "
                                     "dataset does not exist"))  # fmt: skip
    r.on(["zfs", "list", "-H", "-o", "name", "-t", "all"], Completed((), 1, "", "no such"))
    seen = {"tank/rex"}
    s = _remembering(r, seen)  # ensure_layout not called: nothing was assumed
    with pytest.raises(StorageError, match="does not exist"):
        s.clone("images/k@img", "jails/web")
    assert [c[:2] for c in r.calls].count(("zfs", "clone")) == 1
    assert seen == set()  # a dataset found missing: the next request looks again


def test_a_failed_command_that_finds_a_dataset_missing_forgets_the_layout() -> None:
    seen = {"tank/rex", "other/rex"}
    r = ScriptedRunner()
    r.on(["zfs", "set"], Completed((), 1, "", "cannot open 'tank/rex/jails/web': dataset "
                                   "does not exist"))  # fmt: skip
    with pytest.raises(StorageError):
        _remembering(r, seen).set_props("jails/web", {"record": "{}"})
    assert seen == {"other/rex"}


def test_props_of_is_one_zfs_get_and_skips_what_does_not_exist() -> None:
    r = ScriptedRunner(strict=True)
    out = ("tank/rex/images/k\tmountpoint\t/m/images/k\tinherited from tank\n"
           "tank/rex/images/k\trexcarcer:osrelease\t14.1-RELEASE\tlocal\n"
           "tank/rex/jails/web\tmountpoint\t/m/jails/web\tinherited from tank\n"
           "tank/rex/jails/web\trexcarcer:osrelease\t13.0-RELEASE\tinherited from tank/rex\n"
           )  # fmt: skip
    r.on(["zfs", "get"], Completed((), 1, out, "cannot open 'tank/rex/jails/x': dataset does "
                                   "not exist\n"))  # fmt: skip
    found = _storage(r).props_of(["jails/web", "images/k", "jails/x"], ["osrelease"])
    assert r.calls == [("zfs", "get", "-Hp", "-o", "name,property,value,source",
                        "mountpoint,rexcarcer:osrelease", "tank/rex/jails/web",
                        "tank/rex/images/k", "tank/rex/jails/x")]  # fmt: skip
    assert found["images/k"].props == {"osrelease": "14.1-RELEASE"}
    assert found["jails/web"].props == {}  # inherited: not the dataset's own
    assert found["jails/web"].mountpoint == Path("/m/jails/web") and "jails/x" not in found
    failing = ScriptedRunner()
    failing.on(["zfs", "get"], Completed((), 1, "", "internal error: out of memory\n"))
    with pytest.raises(StorageError, match="out of memory"):
        _storage(failing).props_of(["jails/web"], ["osrelease"])


def test_tree_parses_one_zfs_get_as_the_two_commands() -> None:
    rows = [
        ("tank/rex/bases", "type", "filesystem", "-"),
        ("tank/rex/bases", "mountpoint", "/m/bases", "inherited from tank"),
        ("tank/rex/bases/bb", "type", "filesystem", "-"),
        ("tank/rex/bases/bb", "origin", "-", "-"),
        ("tank/rex/bases/bb", "mountpoint", "/m/bases/bb", "inherited from tank"),
        ("tank/rex/bases/bb", "guid", "17", "-"),
        ("tank/rex/bases/bb", "rexcarcer:version", "1", "local"),
        ("tank/rex/bases/bb", "rexcarcer:jail", "-", "-"),
        ("tank/rex/bases/bb@1", "type", "snapshot", "-"),
        ("tank/rex/bases/bb@1", "guid", "16446307205543589952", "-"),
        ("tank/rex/bases/bb@1", "createtxg", "35", "-"),
        ("tank/rex/bases/bb@1", "mountpoint", "-", "-"),
        ("tank/rex/bases/bb@1", "rexcarcer:version", "1", "inherited from tank/rex/bases/bb"),
        ("tank/rex/bases/bb@1", "rexcarcer:complete", "1", "local"),
        ("tank/rex/bases/cc", "type", "filesystem", "-"),
        ("tank/rex/bases/cc", "origin", "tank/rex/bases/bb@1", "-"),
        ("tank/rex/bases/cc", "mountpoint", "none", "local"),
        ("tank/rex/bases/cc", "rexcarcer:version", "2", "inherited from tank/rex/bases"),
        ("tank/rex/bases/bb/deep", "type", "filesystem", "-"),
    ]
    text = "".join("\t".join(r) + "\n" for r in rows)
    r = ScriptedRunner(strict=True)
    r.on(["zfs", "get"], text)
    datasets, snapshots = _storage(r).tree("bases")
    assert r.calls[0][:8] == ("zfs", "get", "-Hp", "-r", "-d", "2", "-o",
                              "name,property,value,source")  # fmt: skip
    assert r.calls[0][8].startswith("type,origin,mountpoint,guid,createtxg,rexcarcer:")
    assert r.calls[0][9:] == ("tank/rex/bases",)
    assert datasets == [
        zfs.Dataset("bases/bb", Path("/m/bases/bb"), None, {"version": "1"}),
        zfs.Dataset("bases/cc", None, "bases/bb@1", {"version": "2"}),  # inherited counts
    ]
    assert [(s.name, s.guid, s.createtxg, s.props) for s in snapshots] == [
        ("bases/bb@1", 16446307205543589952, 35, {"complete": "1"})]  # fmt: skip
    gone = ScriptedRunner()
    gone.on(["zfs", "get"], Completed((), 1, "", "cannot open 'tank/rex/bases': dataset does "
                                      "not exist\n"))  # fmt: skip
    assert _storage(gone).tree("bases") == ([], [])
    broken = ScriptedRunner()
    broken.on(["zfs", "get"], Completed((), 1, "", "internal error\n"))
    with pytest.raises(StorageError, match="internal error"):
        _storage(broken).tree("bases")


def test_clone_only_does_not_ask_where_the_clone_is_mounted() -> None:
    r = ScriptedRunner(strict=True)
    r.on(["zfs", "clone"], "")
    _storage(r).clone_only("images/a@img", "jails/web", props={"jail": "web"})
    assert r.calls == [("zfs", "clone", "-o", "rexcarcer:jail=web", "tank/rex/images/a@img",
                        "tank/rex/jails/web")]  # fmt: skip


def _listing_rows(*extra: tuple[str, str, str, str]) -> str:
    rows = [
        *extra,
        ("tank/rex/bases", "type", "filesystem", "-"),
        ("tank/rex/bases/bb", "type", "filesystem", "-"),
        ("tank/rex/bases/bb", "mountpoint", "/m/bases/bb", "inherited from tank"),
        ("tank/rex/bases/bb", "rexcarcer:version", "1", "local"),
        ("tank/rex/bases/bb@1", "type", "snapshot", "-"),
        ("tank/rex/bases/bb@1", "guid", "16", "-"),
        ("tank/rex/bases/bb@1", "createtxg", "35", "-"),
        ("tank/rex/images", "type", "filesystem", "-"),
        ("tank/rex/images/k1", "type", "filesystem", "-"),
        ("tank/rex/images/k1", "mountpoint", "/m/images/k1", "inherited from tank"),
        ("tank/rex/images/k1", "rexcarcer:complete", "1", "local"),
        ("tank/rex/images/k1@img", "type", "snapshot", "-"),
        ("tank/rex/images/k1@img", "guid", "17", "-"),
        ("tank/rex/images/k1@img", "createtxg", "40", "-"),
        ("tank/rex/images/k2", "type", "filesystem", "-"),
        ("tank/rex/images/k2", "mountpoint", "/m/images/k2", "inherited from tank"),
    ]
    return "".join("\t".join(r) + "\n" for r in rows)


def test_a_listing_answers_a_rex_ups_reads_with_one_zfs_get() -> None:
    r = ScriptedRunner(strict=True)
    r.on(["zfs", "get"], _listing_rows())
    r.on(["zfs", "list", "-H", "-o", "name", "-t", "all"], Completed((), 1, "", "does not exist"))
    s = _storage(r)
    with s.listing(("bases", "images")):
        datasets, snapshots = s.tree("bases")
        assert [d.name for d in datasets] == ["bases/bb"] and [n.name for n in snapshots] == [
            "bases/bb@1"
        ]
        assert [d.name for d in s.datasets("images")] == ["images/k1", "images/k2"]
        assert s.datasets("images")[0].props == {"complete": "1"}
        assert s.exists("images/k1@img") and s.exists("bases/bb")
        assert len(r.calls) == 1  # all of it from one command, of both kinds
        assert r.calls[0][9:] == ("tank/rex/bases", "tank/rex/images")
        # what the listing lacks is looked up, not taken as missing
        assert not s.exists("images/k2@img")
        assert r.calls[-1][:2] == ("zfs", "list")
        # a change: the next read lists again
        r.on(["zfs", "snapshot"], "")
        s.snapshot("images/k2@img")
        s.tree("images")
        assert [c[1] for c in r.calls] == ["get", "list", "snapshot", "get"]
    # outside the scope each read is its own command
    s.tree("bases")
    assert r.calls[-1][9:] == ("tank/rex/bases",)


def test_a_listing_of_a_layout_without_a_kind_reads_each_on_its_own() -> None:
    failing = ScriptedRunner(strict=True)
    failing.on(["zfs", "get"], Completed((), 1, "", "cannot open 'tank/rex/images': dataset does "
                                         "not exist\n"))  # fmt: skip
    failing.on(["zfs", "list"], "")
    s = _storage(failing)
    with s.listing(("bases", "images")):
        assert s.tree("images") == ([], [])  # its own command, which finds it missing
        assert s.datasets("images") == []
    assert [c[1] for c in failing.calls] == ["get", "get", "list"]


def test_a_clone_in_a_listing_is_answered_where_its_parent_puts_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A start reads the new clone's mountpoint and its image's osrelease: the
    clone inherits its parent's mountpoint, the image is in the listing."""
    mnt = tmp_path / "m"
    layout = f"tank/rex\t{mnt}\n" + "".join(f"tank/rex/{k}\t{mnt}/{k}\n" for k in LAYOUT)
    r = ScriptedRunner(strict=True)
    r.on(list(LIST_LAYOUT), layout)
    own = ("tank/rex/images/k1", "rexcarcer:osrelease", "14.1", "local")
    r.on(["zfs", "get", "-Hp", "-r"], _listing_rows(own))
    r.on(["zfs", "get", "-Hp", "-o"], "")  # props_of's own command
    r.on(["zfs", "clone"], "")
    mounted = {mnt / "jails" / "web"}
    monkeypatch.setattr(zfs, "mounted_at", lambda p: p in mounted)
    s = _storage(r)
    s.ensure_layout()
    with s.listing(("bases", "images")):
        s.tree("images")
        s.clone_only("images/k1@img", "jails/web", props={"jail": "web", "generation": "1"})
        calls = len(r.calls)
        got = s.props_of(["jails/web", "images/k1"], ["osrelease", "jail"])
        assert len(r.calls) == calls  # no zfs command: the listing survived the clone
        assert got == {
            "jails/web": zfs.Dataset("jails/web", mnt / "jails" / "web", None, {"jail": "web"}),
            "images/k1": zfs.Dataset("images/k1", Path("/m/images/k1"), None,
                                     {"osrelease": "14.1"}),
        }  # fmt: skip
        # its properties changed since: zfs says
        r.on(["zfs", "set"], "")
        s.set_props("jails/web", {"osrelease": "13.2"})
        s.props_of(["jails/web", "images/k1"], ["osrelease"])
        assert r.calls[-1][:4] == ("zfs", "get", "-Hp", "-o")
        s.clone_only("images/k1@img", "jails/web", props={"jail": "web"})
        calls = len(r.calls)
        s.props_of(["jails/web", "images/k1"], ["osrelease"])
        assert len(r.calls) == calls
        # not mounted where its parent puts it (a mountpoint of its own): zfs says
        mounted.clear()
        s.props_of(["jails/web", "images/k1"], ["osrelease"])
        assert r.calls[-1][:3] == ("zfs", "get", "-Hp") and r.calls[-1][3] == "-o"
