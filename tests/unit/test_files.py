"""Paths inside a jail root never lead out of it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from rexcarcer import buildctx, jailfs
from rexcarcer.errors import UnsafePath


@pytest.fixture
def root(tmp_path: Path) -> Path:
    r = tmp_path / "root"
    (r / "usr/local/etc").mkdir(parents=True)
    os.symlink("/usr/local/etc", r / "etc")  # absolute: means inside the jail
    os.symlink("../../../../../../../..", r / "up")  # climbs out
    os.symlink("loop", r / "loop")
    return r


def test_absolute_symlink_is_resolved_inside_the_root(root: Path) -> None:
    assert jailfs.resolve_in_root(root, "/etc/rc.conf") == root / "usr/local/etc/rc.conf"


def test_dotdot_above_the_root_is_refused(root: Path) -> None:
    with pytest.raises(UnsafePath, match="outside the jail root"):
        jailfs.resolve_in_root(root, "/up/etc/passwd")
    with pytest.raises(UnsafePath):
        jailfs.resolve_in_root(root, "/../etc")


def test_symlink_loops_are_refused(root: Path) -> None:
    with pytest.raises(UnsafePath, match="too many levels"):
        jailfs.resolve_in_root(root, "/loop/x")


def test_write_file_replaces_a_final_symlink_instead_of_following_it(
    root: Path, tmp_path: Path
) -> None:
    outside = tmp_path / "outside"
    outside.write_text("keep")
    (root / "usr/local/etc/x").symlink_to(outside)
    jailfs.write_file(root, "/etc/x", b"new", mode=0o600)
    assert outside.read_text() == "keep"
    assert (root / "usr/local/etc/x").read_bytes() == b"new"
    assert (root / "usr/local/etc/x").stat().st_mode & 0o777 == 0o600


def test_copy_tree_keeps_modes_and_links(tmp_path: Path, root: Path) -> None:
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "sub/run.sh").write_text("#!/bin/sh\n")
    (src / "sub/run.sh").chmod(0o755)
    os.symlink("/etc/passwd", src / "link")
    jailfs.copy_into(root, src, "/opt/app")
    assert (root / "opt/app/sub/run.sh").stat().st_mode & 0o777 == 0o755
    assert os.readlink(root / "opt/app/link") == "/etc/passwd"


def test_copy_file_into_directory(tmp_path: Path, root: Path) -> None:
    f = tmp_path / "page.html"
    f.write_text("x")
    jailfs.copy_into(root, f, "/var/www/")
    assert (root / "var/www/page.html").read_text() == "x"


def test_checked_source_refuses_escapes(tmp_path: Path) -> None:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "ok").write_text("1")
    os.symlink("/etc", ctx / "etc")
    assert buildctx.checked_source(ctx, "ok") == (ctx / "ok").resolve()
    for bad in ["../ctx/../x", "etc/passwd", "/etc/passwd"]:
        with pytest.raises(UnsafePath):
            buildctx.checked_source(ctx, bad)


def test_content_digest_sees_content_mode_and_names(tmp_path: Path) -> None:
    d = tmp_path / "d"
    d.mkdir()
    (d / "a").write_text("1")
    first = buildctx.content_digest(d)
    (d / "a").chmod(0o600)
    second = buildctx.content_digest(d)
    (d / "a").write_text("2")
    third = buildctx.content_digest(d)
    assert len({first, second, third}) == 3


def test_a_directory_is_opened_first_and_made_only_when_missing(tmp_path: Path) -> None:
    (tmp_path / "there").mkdir(mode=0o700)
    (tmp_path / "file").write_text("")
    os.symlink(str(tmp_path / "there"), tmp_path / "link")  # root in the jail swapped it
    os.symlink(str(tmp_path / "nowhere"), tmp_path / "dangling")
    top = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for create in (False, True):
            fd = jailfs._open_dir(top, "there", "/there", create)
            os.close(fd)
            for bad in ("link", "dangling", "file"):
                with pytest.raises(UnsafePath, match="not a plain directory"):
                    jailfs._open_dir(top, bad, f"/{bad}", create)
        assert not (tmp_path / "nowhere").exists()
        assert (tmp_path / "there").stat().st_mode & 0o777 == 0o700  # left as it was
        with pytest.raises(UnsafePath, match="not a plain directory"):
            jailfs._open_dir(top, "new", "/new", False)
        assert not (tmp_path / "new").exists()
        os.close(jailfs._open_dir(top, "new", "/new", True))
        assert (tmp_path / "new").is_dir()
    finally:
        os.close(top)


def _tree(r: Path) -> Path:
    """Symlinks of every kind an image may hold."""
    (r / "usr/local/etc/ssl").mkdir(parents=True)
    (r / "usr/share/certs").mkdir(parents=True)
    (r / "var").mkdir()
    (r / "var/file").write_text("")
    os.symlink("/usr/local/etc", r / "etc")  # absolute: inside the jail
    os.symlink("../share/certs", r / "usr/certs")  # relative, with ..
    os.symlink("certs", r / "usr/share/c2")
    os.symlink("/usr/certs", r / "chain")  # a link to a link
    os.symlink("../../../../..", r / "up")  # climbs out
    os.symlink("loop", r / "loop")
    os.symlink("/nowhere/deep", r / "dangling")  # made, inside the jail, when written
    os.symlink("/var/file", r / "tofile")
    return r


INSIDES = [
    "/", "/etc", "/etc/ssl", "/etc/ssl/new/deeper", "/usr/certs", "/usr/certs/x", "/chain",
    "/chain/../local", "/usr/share/c2", "/up", "/up/etc", "/loop", "/loop/x", "/dangling",
    "/dangling/x", "/tofile", "/var/file", "/var/file/x", "/new/a/b", "/etc/../var",
    "/new/../var", "/./etc/./ssl", "/etc/ssl/../../../..",
]  # fmt: skip


@pytest.mark.parametrize("create", [False, True])
@pytest.mark.parametrize("inside", INSIDES)
def test_one_walk_opens_what_the_resolve_then_open_walk_did(
    tmp_path: Path, inside: str, create: bool
) -> None:
    """jail_dir follows symlinks while it opens (one call per directory that
    exists); the reference resolves first (resolve_in_root), then opens the
    result with O_NOFOLLOW: the same directory, the same error, the same
    directories made."""
    one, ref = _tree(tmp_path / "one"), _tree(tmp_path / "ref")

    def name(root: Path, fd: int) -> str:
        return os.readlink(f"/proc/self/fd/{fd}").replace(str(root), "ROOT")

    def error(root: Path, exc: UnsafePath) -> str:
        return "error: " + str(exc).replace(str(root), "ROOT").split(":")[0]

    try:
        with jailfs.jail_dir(one, inside, create=create) as fd:
            got = name(one, fd)
    except UnsafePath as exc:
        got = error(one, exc)
    try:
        rel = list(jailfs.resolve_in_root(ref, inside).relative_to(ref).parts)
        fd = jailfs._walk(ref, inside, rel, create, follow=False)
        want = name(ref, fd)
        os.close(fd)
    except UnsafePath as exc:
        want = error(ref, exc)
    assert got == want, (got, want)

    def dirs(root: Path) -> list[str]:
        return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_dir()
                      and not p.is_symlink())  # fmt: skip

    assert dirs(one) == dirs(ref)


def test_files_rex_writes_get_their_mode_and_root_whatever_the_umask_and_group(
    root: Path,
) -> None:
    d = root / "usr/local/etc/app"
    d.mkdir(mode=0o777)
    os.chmod(d, 0o2777)  # set-group-ID and writable by all: what a jail's root may leave
    if os.geteuid() == 0:
        os.chown(d, 0, 4242)  # new files would take this group
    old = os.umask(0o077)
    try:
        jailfs.write_file(root, "/etc/app/conf", b"x", mode=0o644)
        jailfs.replace_files(root, "/etc/app", [("key", b"k", 0o600), ("crt", b"c", 0o444)])
    finally:
        os.umask(old)
    for name, mode in (("conf", 0o644), ("key", 0o600), ("crt", 0o444)):
        st = (d / name).stat()
        assert st.st_mode & 0o7777 == mode, name
        if os.geteuid() == 0:
            assert (st.st_uid, st.st_gid) == (0, 0), name
    assert d.stat().st_mode & 0o7777 == 0o755  # replace_files: root's, not writable by others
    if os.geteuid() == 0:
        assert (d.stat().st_uid, d.stat().st_gid) == (0, 0)


def test_kept_open_walks_to_each_directory_once_and_closes_what_it_kept(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    walks: list[str] = []
    real = jailfs._walk

    def counting(*args: object, **kw: object) -> int:
        walks.append(str(args[1]))
        return real(*args, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(jailfs, "_walk", counting)
    before = len(os.listdir("/proc/self/fd"))
    with jailfs.kept_open(root):
        jailfs.write_file(root, "/etc/a", b"1")
        jailfs.write_file(root, "/etc/b", b"2")
        jailfs.replace_files(root, "/etc/ssl/rc", [("k", b"k", 0o600), ("c", b"c", 0o644)])
        assert jailfs.read_small(root, "/etc/ssl/rc/k") == b"k"
        assert jailfs.read_small(root, "/etc/a") == b"1"
        assert len(os.listdir("/proc/self/fd")) > before
    assert walks == ["/etc", "/etc/ssl/rc"]
    assert len(os.listdir("/proc/self/fd")) == before
    # /etc is a symlink to /usr/local/etc in this root: the files are there
    assert (root / "usr/local/etc/b").read_bytes() == b"2"
    jailfs.write_file(root, "/etc/a", b"3")
    jailfs.write_file(root, "/etc/a", b"4")
    assert walks[2:] == ["/etc", "/etc"]  # outside: a walk each
