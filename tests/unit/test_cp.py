"""rex cp on the in-memory drivers: files in and out of a jail root, never
through a symlink out of it."""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

import pytest

from rexcarcer.cli.files_cmds import _pack, _unpack, jail_side
from rexcarcer.engine import jails
from rexcarcer.engine.base import Engine
from rexcarcer.errors import NotFound, UnsafePath
from rexcarcer.rexfile.parser import parse
from rexcarcer.service.local import LocalService
from tests.unit.fakes import fake_engine


@pytest.fixture
def eng(tmp_path: Path) -> Engine:
    e = fake_engine(tmp_path / "host")
    jails.up(e, parse("BASE bb\n", path=tmp_path / "web.rex"), "web")
    return e


def _tar(path: Path) -> io.BytesIO:
    buf = io.BytesIO()
    _pack(path, buf)
    buf.seek(0)
    return buf


def _out(svc: LocalService, name: str, src: str) -> io.BytesIO:
    buf = io.BytesIO()
    svc.cp_out(name, src, buf)
    buf.seek(0)
    return buf


def test_jail_paths_are_told_from_local_ones() -> None:
    assert jail_side("web:/etc/x") == ("web", "/etc/x")
    assert jail_side("./web:/etc/x") is None and jail_side("web:rel") is None
    assert jail_side("Not_A_Jail:/x") is None and jail_side("plain") is None


def test_a_tree_goes_in_and_comes_out(eng: Engine, tmp_path: Path) -> None:
    svc = LocalService(lambda: eng)
    site = tmp_path / "site"
    (site / "css").mkdir(parents=True)
    (site / "index.html").write_text("hi")
    (site / "css" / "a.css").write_text("h1{}")
    svc.cp_in("web", "/var/www/", _tar(site))
    root = eng.host.storage.mountpoint("jails/web")
    assert (root / "var/www/site/css/a.css").read_text() == "h1{}"
    out = tmp_path / "back"
    _unpack(_out(svc, "web", "/var/www/site"), out)
    assert (out / "index.html").read_text() == "hi" and (out / "css/a.css").read_text() == "h1{}"


def test_a_symlink_planted_in_the_jail_never_reaches_the_host(eng: Engine, tmp_path: Path) -> None:
    svc = LocalService(lambda: eng)
    root = eng.host.storage.mountpoint("jails/web")
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "secret").write_text("host data")
    (root / "etc").mkdir(exist_ok=True)
    os.symlink(str(victim), root / "etc" / "evil")  # absolute: inside the jail, not the host
    os.symlink(str(victim / "secret"), root / "etc" / "leak")
    f = tmp_path / "f"
    f.write_text("written")
    svc.cp_in("web", "/etc/evil/", _tar(f))
    assert not (victim / "f").exists()  # not on the host ...
    assert (root / str(victim).lstrip("/") / "f").read_text() == "written"  # ... in the jail
    with tarfile.open(fileobj=_out(svc, "web", "/etc/leak")) as tar:
        [member] = tar.getmembers()
    assert member.issym() and member.linkname == str(victim / "secret")  # a link, not the data
    with pytest.raises(UnsafePath, match="outside the jail root"):
        _out(svc, "web", "/../../etc")
    with pytest.raises(NotFound, match="cannot read web:/nope"):
        _out(svc, "web", "/nope")


def _hostile(*members: tarfile.TarInfo) -> io.BytesIO:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for m in members:
            tar.addfile(m, io.BytesIO(b"x" * m.size) if m.isreg() else None)
    buf.seek(0)
    return buf


def _member(
    name: str, kind: bytes = tarfile.REGTYPE, link: str = "", size: int = 1
) -> tarfile.TarInfo:
    m = tarfile.TarInfo(name)
    m.type, m.linkname, m.size = kind, link, size if kind == tarfile.REGTYPE else 0
    return m


@pytest.mark.parametrize(
    ("members", "why"),
    [
        ((_member("/etc/passwd"),), "not a relative path"),
        ((_member("a/../../x"),), "not a relative path"),
        ((_member("a", tarfile.DIRTYPE), _member("b")), "one tree"),
        ((_member("a", tarfile.SYMTYPE, "/etc"), _member("a/passwd")), "below a symlink"),
        ((_member("a"), _member("h", tarfile.LNKTYPE, "a")), "one tree"),
        ((_member("h", tarfile.LNKTYPE, "/etc/shadow"),), "neither a file"),
        ((_member("dev", tarfile.CHRTYPE),), "neither a file"),
        ((_member("fifo", tarfile.FIFOTYPE),), "neither a file"),
    ],
)
def test_a_hostile_tar_into_a_jail_is_refused(
    eng: Engine, members: tuple[tarfile.TarInfo, ...], why: str
) -> None:
    svc = LocalService(lambda: eng)
    with pytest.raises(UnsafePath, match=why):
        svc.cp_in("web", "/srv/", _hostile(*members))


def test_a_file_in_a_tar_becomes_dst_or_goes_into_it(eng: Engine) -> None:
    svc = LocalService(lambda: eng)
    root = eng.host.storage.mountpoint("jails/web")
    svc.cp_in("web", "/srv/new.txt", _hostile(_member("f", size=3)))
    assert (root / "srv/new.txt").read_bytes() == b"xxx"
    svc.cp_in("web", "/srv/", _hostile(_member("g", size=2)))
    assert (root / "srv/g").read_bytes() == b"xx"
    mode = tarfile.TarInfo("s")
    mode.size, mode.mode = 1, 0o4755  # a set-uid bit does not survive
    svc.cp_in("web", "/srv/", _hostile(mode))
    assert (root / "srv/s").stat().st_mode & 0o7777 == 0o755
