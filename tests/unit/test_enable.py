"""ENABLE writes /etc/rc.conf.d/<service> in the jail at every start, through
jailfs, on both platforms; FreeBSD gets no /etc/hostname, Linux does."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from rexcarcer.engine import jails
from rexcarcer.errors import UnsafePath
from rexcarcer.model.jail import JailRecord
from rexcarcer.platform.fake import FakePlatform
from rexcarcer.platform.kinds import PlatformKind
from rexcarcer.rexfile.parser import parse
from tests.unit.fakes import fake_engine


def _root(eng: jails.Engine, name: str) -> Path:
    return eng.host.storage.mountpoint(f"jails/{name}")


def test_enable_writes_the_rc_conf_d_file_with_quoted_flags(tmp_path: Path) -> None:
    eng = fake_engine(tmp_path)
    text = "BASE bb\nENABLE nginx\nENABLE sshd FLAGS -4 -o 'Banner none'\nENV A=1\n"
    jails.up(eng, parse(text, path=tmp_path / "web.rex"), "web")
    root = _root(eng, "web")
    nginx = (root / "etc/rc.conf.d/nginx").read_text()
    assert nginx.splitlines()[1:] == ['nginx_enable="YES"']
    sshd = (root / "etc/rc.conf.d/sshd").read_text()
    assert sshd.splitlines()[2] == "sshd_flags='-4 -o '\\''Banner none'\\'''"
    assert (root / "etc/hostname").read_text() == "web.jail.rex.internal\n"  # Linux has one
    rec = jails.record(eng, "web")
    assert rec is not None and rec.enable == (("nginx", None), ("sshd", "-4 -o 'Banner none'"))
    assert JailRecord.from_json(rec.as_json()) == rec


def test_freebsd_writes_no_hostname_file(tmp_path: Path) -> None:
    eng = fake_engine(tmp_path)
    eng.host.platform = FakePlatform(eng.host.runner, eng.host.config, like=PlatformKind.FREEBSD)
    jails.up(eng, parse("BASE bb\n", path=tmp_path / "web.rex"), "web")
    assert not (_root(eng, "web") / "etc/hostname").exists()


def test_a_symlink_planted_at_rc_conf_d_never_leads_out_of_the_jail(tmp_path: Path) -> None:
    eng = fake_engine(tmp_path)
    jails.up(eng, parse("BASE bb\nENABLE nginx\n", path=tmp_path / "web.rex"), "web")
    jails.stop(eng, "web")
    root = _root(eng, "web")
    outside = tmp_path / "outside"
    outside.mkdir()
    for f in (root / "etc/rc.conf.d").iterdir():
        f.unlink()
    (root / "etc/rc.conf.d").rmdir()
    os.symlink(outside, root / "etc/rc.conf.d")  # root in the jail did this
    jails.start(eng, "web")
    # the link is resolved as the jail sees it: the file stays inside the jail's root
    assert list(outside.iterdir()) == []
    inside = root / str(outside).lstrip("/") / "nginx"
    assert inside.read_text().endswith('nginx_enable="YES"\n')
    (root / "etc/rc.conf.d").unlink()
    os.symlink("../../../..", root / "etc/rc.conf.d")  # out of the root: refused
    jails.stop(eng, "web")
    with pytest.raises(UnsafePath):
        jails.start(eng, "web")
