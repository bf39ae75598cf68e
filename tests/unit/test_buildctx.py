"""The build context an agent unpacks is hostile input: hand-made tar files, one
per way out, are refused before anything is written; links that stay inside
are kept as links; the client refuses the same trees before it sends them."""

from __future__ import annotations

import io
import os
import stat
import tarfile
from pathlib import Path

import pytest

from rexcarcer import buildctx
from rexcarcer.errors import UnsafePath
from rexcarcer.rexfile.parser import load

REX = b"BASE busybox\nPROVISION COPY tree /opt/tree\n"


def member(name: str, kind: bytes = tarfile.REGTYPE, *, link: str = "", data: bytes = b"x",
           mode: int = 0o644) -> tuple[tarfile.TarInfo, bytes | None]:  # fmt: skip
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.mode = kind, link, mode
    if kind in (tarfile.CHRTYPE, tarfile.BLKTYPE):
        info.devmajor, info.devminor = 1, 3
    if kind == tarfile.REGTYPE:
        info.size = len(data)
        return info, data
    return info, None


def archive(*members: tuple[tarfile.TarInfo, bytes | None], rexfile: bool = True) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        if rexfile:
            info, data = member("web.rex", data=REX)
            tar.addfile(info, io.BytesIO(data or b""))
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


@pytest.fixture
def dest(tmp_path: Path) -> Path:
    d = tmp_path / "ctx" / "unpacked"
    d.mkdir(parents=True)
    return d


def refused(data: bytes, dest: Path, match: str) -> None:
    with pytest.raises(UnsafePath, match=match) as exc:
        buildctx.unpack(data, dest, "web.rex")
    assert exc.value.exit_code == 26 and exc.value.hint
    assert list(dest.iterdir()) == []  # nothing written, not even the .rex file
    assert sorted(p.name for p in dest.parent.iterdir()) == ["unpacked"]


@pytest.mark.parametrize("name", ["/etc/cron.d/x", "//tmp/x"])
def test_absolute_member_names_are_refused(dest: Path, name: str) -> None:
    refused(archive(member(name)), dest, "is an absolute path")


@pytest.mark.parametrize("name", ["../x", "tree/../../x", "tree/../x", "a/b/.."])
def test_dotdot_in_a_member_name_is_refused(dest: Path, name: str) -> None:
    refused(archive(member("tree", tarfile.DIRTYPE), member(name)), dest, r"contains '\.\.'")


def test_hard_links_are_refused_even_to_a_member(dest: Path) -> None:
    data = archive(member("tree/a"), member("tree/b", tarfile.LNKTYPE, link="tree/a"))
    refused(data, dest, r"'tree/b' is a hard link \(to 'tree/a'\)")
    refused(archive(member("x", tarfile.LNKTYPE, link="/etc/shadow")), dest, "hard link")


@pytest.mark.parametrize(
    ("kind", "word"),
    [
        (tarfile.CHRTYPE, "device"),
        (tarfile.BLKTYPE, "device"),
        (tarfile.FIFOTYPE, "fifo"),
        (b"V", "special file"),
    ],
)
def test_devices_fifos_and_other_specials_are_refused(dest: Path, kind: bytes, word: str) -> None:
    refused(archive(member("tree/dev", kind)), dest, f"'tree/dev' is a {word}")


def test_symlink_to_an_absolute_path_is_refused(dest: Path) -> None:
    data = archive(member("tree/passwd", tarfile.SYMTYPE, link="/etc/passwd"))
    refused(data, dest, "symlink to the absolute path '/etc/passwd'")


@pytest.mark.parametrize("target", ["../..", "../../etc", "sub/../../..", "./../../x"])
def test_symlink_leaving_the_context_is_refused(dest: Path, target: str) -> None:
    data = archive(member("tree", tarfile.DIRTYPE), member("tree/l", tarfile.SYMTYPE, link=target))
    refused(data, dest, "leaves the build context")
    # `..` from tree/ is the context directory itself: inside
    buildctx.unpack(archive(member("tree/l", tarfile.SYMTYPE, link="..")), dest, "web.rex")
    assert os.readlink(dest / "tree/l") == ".."


def test_a_chain_of_links_is_followed_whatever_the_order(dest: Path) -> None:
    # lexically `tree/t -> ../s/..` stays inside; through `s -> .` it climbs out
    chain = [member("s", tarfile.SYMTYPE, link="."),
             member("tree/t", tarfile.SYMTYPE, link="../s/..")]  # fmt: skip
    refused(archive(*chain), dest, "leaves the build context")
    refused(archive(*reversed(chain)), dest, "leaves the build context")
    via_absolute = [member("abs", tarfile.SYMTYPE, link="tree"),
                    member("tree", tarfile.SYMTYPE, link="/etc"),
                    member("l", tarfile.SYMTYPE, link="abs/passwd")]  # fmt: skip
    refused(archive(*via_absolute), dest, "absolute path")


def test_link_loops_are_refused(dest: Path) -> None:
    loop = [member("a", tarfile.SYMTYPE, link="b"), member("b", tarfile.SYMTYPE, link="a"),
            member("c", tarfile.SYMTYPE, link="a/x")]  # fmt: skip
    refused(archive(*loop), dest, "too many levels of symbolic links")


def test_a_member_below_a_symlink_is_refused(dest: Path) -> None:
    # `l -> sub` is harmless; writing `l/x` would write through it
    for order in (1, -1):
        data = archive(*[member("sub", tarfile.DIRTYPE), member("l", tarfile.SYMTYPE, link="sub"),
                         member("l/x")][::order])  # fmt: skip
        refused(data, dest, "'l/x' lies below the symlink 'l'")


def test_a_name_that_changes_type_is_refused(dest: Path) -> None:
    data = archive(member("tree/x"), member("tree/x", tarfile.SYMTYPE, link="y"))
    refused(data, dest, "'tree/x' is a symlink and a file")
    refused(archive(member(".", tarfile.SYMTYPE, link="tree")), dest, "context directory itself")


def test_links_that_stay_inside_are_kept_as_links(dest: Path, tmp_path: Path) -> None:
    data = archive(
        member("tree", tarfile.DIRTYPE),
        member("tree/v2/app.conf", data=b"conf"),
        member("tree/current", tarfile.SYMTYPE, link="v2"),
        member("tree/deep/up", tarfile.SYMTYPE, link="../current/app.conf"),
        member("tree/self", tarfile.SYMTYPE, link="."),
        member("tree/dangling", tarfile.SYMTYPE, link="not/there"),
        member("tree/v2/app.conf"),  # twice, as `COPY tree` and `COPY tree/v2/app.conf` send it
    )
    path = buildctx.unpack(data, dest, "web.rex")
    assert path == dest / "web.rex" and path.read_bytes() == REX
    tree = dest / "tree"
    assert os.readlink(tree / "current") == "v2"
    assert os.readlink(tree / "deep/up") == "../current/app.conf"
    assert os.readlink(tree / "dangling") == "not/there"
    assert (tree / "deep/up").read_bytes() == b"x"  # resolves inside
    assert stat.S_IMODE(dest.stat().st_mode) == 0o700


def test_modes_are_those_a_copy_in_process_copies(dest: Path) -> None:
    data = archive(
        member("tree", tarfile.DIRTYPE, mode=0o750),
        member("tree/run", data=b"#!/bin/sh\n", mode=0o4755),
        member("tree/ro", mode=0o400),
        member(".", tarfile.DIRTYPE, mode=0o777),  # the destination's own mode is kept
    )
    buildctx.unpack(data, dest, "web.rex")
    assert stat.S_IMODE((dest / "tree").stat().st_mode) == 0o750
    assert stat.S_IMODE((dest / "tree/run").stat().st_mode) == 0o4755
    assert stat.S_IMODE((dest / "tree/ro").stat().st_mode) == 0o400
    assert stat.S_IMODE(dest.stat().st_mode) == 0o700


def test_a_broken_archive_or_a_missing_rex_file(dest: Path) -> None:
    from rexcarcer.errors import UsageError

    with pytest.raises(UsageError, match="cannot unpack"):
        buildctx.unpack(b"not a tar" * 100, dest, "web.rex")
    with pytest.raises(UsageError, match=r"has no web\.rex"):
        buildctx.unpack(archive(member("other"), rexfile=False), dest, "web.rex")
    linked = archive(
        member("real.rex", data=REX),
        member("x.rex", tarfile.SYMTYPE, link="real.rex"),
        rexfile=False,
    )
    with pytest.raises(UsageError, match=r"has no x\.rex"):
        buildctx.unpack(linked, dest, "x.rex")


# -- the client: what it packs, and what it refuses to pack ---------------------------


def project(tmp_path: Path) -> Path:
    ctx = tmp_path / "proj"
    (ctx / "tree/v2").mkdir(parents=True)
    (ctx / "tree/v2/app.conf").write_text("conf")
    (ctx / "tree/v2/app.conf").chmod(0o640)
    (ctx / "tree/v2").chmod(0o750)
    (ctx / "tree/current").symlink_to("v2")
    (ctx / "tree/hard").hardlink_to(ctx / "tree/v2/app.conf")
    os.mkfifo(ctx / "tree/fifo")
    (ctx / "web.rex").write_bytes(REX)
    return ctx / "web.rex"


def test_pack_then_unpack_gives_the_agent_the_same_content(tmp_path: Path) -> None:
    rexfile = load(project(tmp_path))
    data = buildctx.pack(rexfile)
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        kinds = {m.name: m.type for m in tar.getmembers()}
        assert {m.uname for m in tar.getmembers()} == {""}  # no host user names travel
    assert kinds["tree/hard"] == tarfile.REGTYPE  # a second name of an inode: a file
    assert kinds["tree/current"] == tarfile.SYMTYPE and "tree/fifo" not in kinds
    dest = tmp_path / "agent"
    dest.mkdir()
    unpacked = load(buildctx.unpack(data, dest, "web.rex"))
    ours = buildctx.content_digest(rexfile.context_dir / "tree")
    assert buildctx.content_digest(unpacked.context_dir / "tree") == ours  # one cache key


def test_the_client_refuses_a_tree_with_a_link_leaving_it(tmp_path: Path) -> None:
    rexfile = project(tmp_path)
    tree = rexfile.parent / "tree"
    (tree / "zone").symlink_to("/usr/share/zoneinfo/UTC")
    with pytest.raises(UnsafePath, match=r"web\.rex:2:1: tree/zone in the COPY source is a "
                       "symlink to the absolute path") as exc:  # fmt: skip
        buildctx.copy_sources(load(rexfile))
    assert "PROVISION RUN ln -s" in (exc.value.hint or "")
    (tree / "zone").unlink()
    (tmp_path / "outside").mkdir()
    (tree / "up").symlink_to("../../outside")
    with pytest.raises(UnsafePath, match="leaves the build context"):
        buildctx.pack(load(rexfile))
    (tree / "up").unlink()
    (rexfile.parent / "self").symlink_to(".")  # beside the tree, not copied, but followed
    (tree / "via").symlink_to("../self/..")
    with pytest.raises(UnsafePath, match="leaves the build context"):
        buildctx.copy_sources(load(rexfile))
    (tree / "via").unlink()
    (tree / "ok").symlink_to("../tree/current/app.conf")
    assert buildctx.copy_sources(load(rexfile))


def test_link_escapes_is_pure() -> None:
    links = {("s",): ".", ("d",): "s/s/s"}
    assert buildctx.link_escapes(("a", "b"), "../../s", links.get) is None
    assert buildctx.link_escapes(("a",), "../d/..", links.get) is not None
    assert buildctx.link_escapes((), "", links.get) == "is a symlink with an empty target"
