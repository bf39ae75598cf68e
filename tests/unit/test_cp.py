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
    svc.cp_in("web", "/var/www/", _pack(site))
    root = eng.host.storage.mountpoint("jails/web")
    assert (root / "var/www/site/css/a.css").read_text() == "h1{}"
    out = tmp_path / "back"
    _unpack(svc.cp_out("web", "/var/www/site"), out)
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
    svc.cp_in("web", "/etc/evil/", _pack(f))
    assert not (victim / "f").exists()  # not on the host ...
    assert (root / str(victim).lstrip("/") / "f").read_text() == "written"  # ... in the jail
    data = svc.cp_out("web", "/etc/leak")
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        [member] = tar.getmembers()
    assert member.issym() and member.linkname == str(victim / "secret")  # a link, not the data
    with pytest.raises(UnsafePath, match="outside the jail root"):
        svc.cp_out("web", "/../../etc")
    with pytest.raises(NotFound, match="cannot read web:/nope"):
        svc.cp_out("web", "/nope")
