"""A new version of a local base: the tree updated in place, only what changed
rewritten (so that ``zfs send -i`` carries only the change), hard links kept,
no link in the old tree followed; and `rex base import` of an existing base."""

from __future__ import annotations

import os
import shutil
import tarfile
from pathlib import Path

import pytest

from rexcarcer.base.local import add_version, find_base, import_base
from rexcarcer.base.tree import sync_tree
from rexcarcer.config import TESTING_ENV, load_config
from rexcarcer.errors import Conflict
from rexcarcer.host import Host
from rexcarcer.progress import QuietProgress
from rexcarcer.run import Completed, ScriptedRunner
from rexcarcer.runtime.fake import FakeRuntime
from rexcarcer.state.memory import MemoryStore
from rexcarcer.storage.fake import FakeStorage


def _tree(root: Path) -> Path:
    (root / "bin").mkdir(parents=True)
    (root / "bin" / "sh").write_bytes(b"\x7fELF sh" * 100)
    (root / "bin" / "same").write_text("unchanged")
    (root / "rescue").mkdir()
    (root / "rescue" / "rescue").write_bytes(b"crunched" * 50)
    for name in ("ls", "cat", "sh"):
        os.link(root / "rescue" / "rescue", root / "rescue" / name)
    (root / "etc").mkdir()
    (root / "etc" / "motd").write_text("old")
    (root / "etc" / "gone").write_text("removed in the new version")
    (root / "etc" / "localtime").symlink_to("/usr/share/zoneinfo/UTC")
    os.chmod(root / "bin" / "sh", 0o555)
    return root


def _snapshot(root: Path) -> dict[str, tuple[int, int, int]]:
    """relative path -> (inode, mode, mtime) of every entry."""
    out = {}
    for dirpath, dirs, files in os.walk(root):
        for n in dirs + files:
            st = os.lstat(os.path.join(dirpath, n))
            out[os.path.relpath(os.path.join(dirpath, n), root)] = (
                st.st_ino, st.st_mode, st.st_mtime_ns)  # fmt: skip
    return out


def _same_trees(a: Path, b: Path) -> None:
    sa, sb = _snapshot(a), _snapshot(b)
    assert sorted(sa) == sorted(sb)
    for rel in sa:
        pa, pb = a / rel, b / rel
        assert sa[rel][1:] == sb[rel][1:], rel  # mode and mtime
        if pa.is_symlink():
            assert os.readlink(pa) == os.readlink(pb)
        elif pa.is_file():
            assert pa.read_bytes() == pb.read_bytes(), rel


def test_sync_rewrites_only_what_changed(tmp_path: Path) -> None:
    old = _tree(tmp_path / "old")
    dst = tmp_path / "dst"
    dst.mkdir()
    sync_tree(old, dst)
    _same_trees(old, dst)
    links = {os.lstat(dst / "rescue" / n).st_ino for n in ("rescue", "ls", "cat", "sh")}
    assert len(links) == 1  # one file, four names, as in the source
    before = _snapshot(dst)

    new = _tree(tmp_path / "new")
    (new / "etc" / "motd").write_text("new")
    (new / "etc" / "gone").unlink()
    (new / "etc" / "added").write_text("added")
    os.chmod(new / "bin" / "same", 0o600)  # metadata only
    for n in ("bin/same", "bin/sh", "rescue/rescue", "etc/localtime"):
        st = os.lstat(old / n)  # same content, same times: as a release tarball has them
        os.utime(new / n, ns=(st.st_atime_ns, st.st_mtime_ns), follow_symlinks=False)
    sync_tree(new, dst)
    _same_trees(new, dst)
    after = _snapshot(dst)
    # unchanged files keep their inode (their blocks); changed ones have the new content
    for rel in ("bin/sh", "bin/same", "rescue/rescue", "rescue/ls"):
        assert after[rel][0] == before[rel][0], rel
    assert after["bin/same"][1] & 0o777 == 0o600
    assert (dst / "etc" / "motd").read_text() == "new"
    assert "etc/gone" not in after and "etc/added" in after


def test_times_kept_to_the_second_are_checked_by_content(tmp_path: Path) -> None:
    """zfs-fuse keeps whole seconds: a tree copied there by `cp -a` has lost the
    nanoseconds, and must not look changed everywhere (the increment would be
    the whole base)."""
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    dst.mkdir()
    for name, old, new in (("same", b"abc", b"abc"), ("changed", b"abc", b"xyz")):
        (src / name).write_bytes(new)
        (dst / name).write_bytes(old)
        ns = (src / name).stat().st_mtime_ns
        whole = ns - ns % 1_000_000_000
        os.utime(src / name, ns=(whole + 123, whole + 123))
        os.utime(dst / name, ns=(whole, whole))  # what zfs-fuse kept of it
    inode = (dst / "same").stat().st_ino
    sync_tree(src, dst)
    assert (dst / "same").stat().st_ino == inode and (dst / "same").stat().st_mtime_ns % 10**9 == 0
    assert (dst / "changed").read_bytes() == b"xyz"


def test_sync_never_follows_a_link_in_the_old_tree(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "passwd").write_text("host file")
    dst = tmp_path / "dst"
    (dst / "etc").mkdir(parents=True)
    (dst / "etc" / "passwd").symlink_to(outside / "passwd")
    (dst / "var").symlink_to(outside)
    src = tmp_path / "src"
    (src / "etc").mkdir(parents=True)
    (src / "etc" / "passwd").write_text("jail file")
    (src / "var").mkdir()
    (src / "var" / "log").write_text("x")
    sync_tree(src, dst)
    assert (outside / "passwd").read_text() == "host file" and sorted(os.listdir(outside)) == [
        "passwd"]  # fmt: skip
    assert not (dst / "etc" / "passwd").is_symlink() and not (dst / "var").is_symlink()
    assert (dst / "var" / "log").read_text() == "x"


def _cp(argv: tuple[str, ...]) -> Completed:
    """`cp -a SRC/. DST/` as the fake storage's base import runs it."""
    shutil.copytree(argv[-2].rstrip("."), argv[-1], symlinks=True, dirs_exist_ok=True)
    return Completed(argv, 0, "", "")


@pytest.fixture
def host(tmp_path: Path) -> Host:
    config = load_config(root=tmp_path / "state", environ=TESTING_ENV)
    runner = ScriptedRunner()
    runner.on(["cp", "-a"], _cp)
    return Host(config, runner, FakeStorage(tmp_path / "zfs"), FakeRuntime(),
                MemoryStore(), QuietProgress())  # fmt: skip


def test_import_of_an_existing_base_adds_a_version(host: Host, tmp_path: Path) -> None:
    src = _tree(tmp_path / "tree")
    one = import_base(host, src, "bb", version="1")
    (src / "etc" / "motd").write_text("v2")
    two = import_base(host, src, "bb", version="2")
    assert (two.snapshot, [v.version for v in two.versions]) == ("bases/bb@2", ["1", "2"])
    assert two.id != one.id and find_base(host, "bb", "1").id == one.id
    assert two.props["origin"] == str(src.resolve())
    snap1 = host.storage.snaps["bases/bb@1"]  # type: ignore[attr-defined]
    assert (snap1 / "etc" / "motd").read_text() == "old"  # the old version is intact
    with pytest.raises(Conflict, match="already has a version '2'"):
        import_base(host, src, "bb", version="2")
    archive = tmp_path / "v3.tar"
    (src / "bin" / "freebsd-version").write_text('USERLAND_VERSION="14.2-RELEASE"\n')
    with tarfile.open(archive, "w") as tar:
        tar.add(src, arcname=".")
    host.runner.on(["tar", "-x"], lambda argv: _untar(archive, Path(argv[-1])))  # type: ignore[attr-defined]
    three = add_version(host, archive, "bb", version=None, origin=str(archive))
    assert three.version == "14.2-RELEASE" and three.props["osrelease"] == "14.2-RELEASE"
    mnt = host.storage.mountpoint("bases/bb")
    assert (mnt / "bin" / "freebsd-version").exists() and oct(mnt.stat().st_mode & 0o777) == "0o755"
    assert not [p for p in host.config.root.iterdir() if p.name.startswith("import-")]


def _untar(archive: Path, into: Path) -> Completed:
    with tarfile.open(archive) as tar:
        tar.extractall(into, filter="tar")
    return Completed(("tar",), 0, "", "")


def test_a_fetched_base_gets_versions_only_from_its_publisher(host: Host, tmp_path: Path) -> None:
    src = _tree(tmp_path / "tree")
    import_base(host, src, "bb", version="1")
    fetched = {"url": "https://h/bb", "signer": "ab" * 32}  # as a received base records it
    host.storage.set_props("bases/bb", fetched)
    host.storage.set_props("bases/bb@1", fetched)
    with pytest.raises(Conflict, match="is fetched from https://h/bb: its versions come from"):
        import_base(host, src, "bb", version="2")


def test_a_jail_on_an_older_version_keeps_its_osrelease(tmp_path: Path) -> None:
    from rexcarcer.base.versions import keep_own_props, record
    from rexcarcer.engine import jails
    from rexcarcer.model.jail import JailRecord
    from tests.unit.fakes import fake_engine

    eng = fake_engine(tmp_path)
    storage = eng.host.storage
    storage.set_props("bases/bb", {"osrelease": "14.1-RELEASE-p3"})  # bb@1, as rex 0.1 wrote it
    keep_own_props(eng.host, find_base(eng.host, "bb"))
    storage.snapshot("bases/bb@2")
    record(eng.host, "bb", "bases/bb@2", {"id": "v2", "osrelease": "14.1-RELEASE-p4"}, {})
    storage.clone("bases/bb@1", "jails/old")  # a jail without build steps: the base itself
    spec = jails.spec_for(eng, JailRecord("old", image="bases/bb@1"))
    assert spec.osrelease == "14.1-RELEASE-p3"
    storage.clone("bases/bb@2", "jails/new")
    assert jails.spec_for(eng, JailRecord("new", image="bases/bb@2")).osrelease == (
        "14.1-RELEASE-p4")  # fmt: skip
