"""Storage.rename: zfs-fuse's "busy" on a mounted filesystem, and the fake."""

from __future__ import annotations

from pathlib import Path

from rexcarcer.run import Completed, ScriptedRunner
from rexcarcer.storage.fake import FakeStorage
from rexcarcer.storage.zfs import Capabilities, ZfsStorage

P = "tank/rex"


def _zfs(runner: ScriptedRunner) -> ZfsStorage:
    return ZfsStorage(runner, P, caps=Capabilities(openzfs=False))


def test_unmounted_rename_is_one_command() -> None:
    r = ScriptedRunner()
    r.on(["zfs", "get", "-H", "-o", "value", "mounted"], "no\n")
    _zfs(r).rename("bases/_recv-fb", "bases/fb")
    assert r.calls[-1] == ("zfs", "rename", f"{P}/bases/_recv-fb", f"{P}/bases/fb")
    assert len(r.calls) == 2


def test_mounted_rename_unmounts_retries_busy_and_mounts_again() -> None:
    r = ScriptedRunner()
    r.on(["zfs", "get", "-H", "-o", "value", "mounted"], "yes\n")
    tries = iter([1, 0])

    def rename(argv: tuple[str, ...]) -> Completed:
        code = next(tries)
        return Completed(argv, code, "", "cannot rename: dataset is busy" if code else "")

    r.on(["zfs", "rename"], rename)
    _zfs(r).rename("bases/a", "bases/b")
    assert [c[1] for c in r.calls] == ["get", "umount", "rename", "rename", "mount"]
    assert r.calls[-1] == ("zfs", "mount", f"{P}/bases/b")


def test_snapshot_rename_skips_the_mount_check() -> None:
    r = ScriptedRunner()
    _zfs(r).rename("bases/fb@s", "bases/fb@14.1")
    assert r.calls == [("zfs", "rename", f"{P}/bases/fb@s", f"{P}/bases/fb@14.1")]


def test_fake_rename_moves_snapshots_and_clones_follow(tmp_path: Path) -> None:
    s = FakeStorage(tmp_path)
    s.ensure_layout()
    (s.create("bases/_recv-fb") / "f").write_text("x")
    s.snapshot("bases/_recv-fb@s")
    s.rename("bases/_recv-fb@s", "bases/_recv-fb@1")
    s.rename("bases/_recv-fb", "bases/fb")
    assert s.snapshots("bases/fb") == ["bases/fb@1"] and not s.exists("bases/_recv-fb")
    assert (s.mountpoint("bases/fb") / "f").read_text() == "x"
    s.clone("bases/fb@1", "jails/j")
    s.rename("bases/fb", "bases/fb2")
    assert [d.origin for d in s.datasets("jails")] == ["bases/fb2@1"]
