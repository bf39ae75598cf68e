"""Every bad input: a clear error, a non-zero exit, and nothing created."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.integration.conftest import Rex, copy_example, sh


def _images(rex: Rex) -> list[str]:
    names = sh("zfs", "list", "-H", "-o", "name", "-r", f"{rex.dataset}/images").stdout.split()
    return [n for n in names if n != f"{rex.dataset}/images"]


def _assert_refused(rex: Rex, rexfile: Path, code: int, *needles: str) -> None:
    done = rex.run("up", rexfile, check=False)
    assert done.returncode == code, done.stderr
    assert done.stderr.startswith("error: "), done.stderr
    assert "Traceback" not in done.stderr
    for needle in needles:
        assert needle in done.stderr, done.stderr
    assert rex.jails() == {}
    assert rex.leftovers() == rex.nothing
    assert _images(rex) == []


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("BASE busybox\nFROB x\n", ":2:1:"),
        ("PROVISION RUN true\n", ":1:1:"),
        ("BASE busybox\nBASE busybox\n", ":2:1:"),
        ("BASE busybox\nPROVISION true\n", "PROVISION RUN"),
        ("BASE busybox\nIP 203.0.113.300/24\n", "203.0.113.300"),
        ("BASE busybox\nIP 203.0.113.9\n", ":2:"),
        ("BASE busybox\nSERVICE web PORT 70000\n", "70000"),
        ("BASE busybox\nSERVICE we_b PORT 80\n", ":2:"),
        ("BASE busybox\nHOSTNAME bad..name\n", ":2:"),
        ("BASE busybox\nPROVISION COPY ../outside /x\n", ":2:"),
    ],
)
def test_malformed_rexfile(rex: Rex, tmp_path: Path, text: str, needle: str) -> None:
    rexfile = tmp_path / "bad.rex"
    rexfile.write_text(text)
    _assert_refused(rex, rexfile, 10, f"{rexfile}", needle)
    assert rex.run("check", rexfile, check=False).returncode == 10


def test_copy_source_symlink_escape(rex: Rex, tmp_path: Path) -> None:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    os.symlink("/etc", ctx / "etc")
    rexfile = ctx / "esc.rex"
    rexfile.write_text(f"BASE {rex.base}\nPROVISION COPY etc/passwd /x\n")
    _assert_refused(rex, rexfile, 26, "leaves the directory")


def test_copy_destination_through_symlink_out_of_the_jail(rex: Rex, tmp_path: Path) -> None:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "f").write_text("x")
    rexfile = ctx / "esc.rex"
    target = tmp_path / "host-target"
    target.mkdir()
    rexfile.write_text(
        f"BASE {rex.base}\n"
        f"PROVISION RUN ln -s ../../../../../../../../..{target} /escape\n"
        "PROVISION COPY f /escape/f\n"
    )
    done = rex.run("up", rexfile, check=False)
    assert done.returncode == 25, done.stderr
    assert "outside the jail root" in done.stderr
    assert not (target / "f").exists()
    assert rex.jails() == {} and rex.leftovers() == rex.nothing


def test_absolute_symlink_in_the_jail_stays_in_the_jail(rex: Rex, tmp_path: Path) -> None:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "f").write_text("inside\n")
    host_dir = tmp_path / "hostdir"
    host_dir.mkdir()
    rexfile = ctx / "abs.rex"
    rexfile.write_text(
        f"BASE {rex.base}\n"
        f"PROVISION RUN mkdir -p /real && ln -s /real /link\n"
        f"PROVISION RUN ln -s {host_dir} /hostlink\n"
        "PROVISION COPY f /link/f\n"
        "PROVISION COPY f /hostlink/f\n"
    )
    rex.run("up", rexfile)
    assert rex.run("exec", "abs", "--", "cat", "/real/f").stdout == "inside\n"
    assert not (host_dir / "f").exists()
    assert rex.run("exec", "abs", "--", "cat", f"{host_dir}/f").stdout == "inside\n"


def test_address_already_taken(rex: Rex, tmp_path: Path) -> None:
    one, two = tmp_path / "one.rex", tmp_path / "two.rex"
    one.write_text(f"BASE {rex.base}\nIP 203.0.113.50/24\n")
    two.write_text(f"BASE {rex.base}\nIP 203.0.113.50/24\n")
    rex.run("up", one)
    done = rex.run("up", two, check=False)
    assert done.returncode == 12
    assert "203.0.113.50 is already used by jail 'one'" in done.stderr
    assert set(rex.jails()) == {"one"}
    assert sh("zfs", "list", f"{rex.dataset}/jails/two", check=False).returncode != 0


def test_missing_base(rex: Rex, tmp_path: Path) -> None:
    rexfile = tmp_path / "nobase.rex"
    rexfile.write_text("BASE nosuchbase\nPROVISION RUN true\n")
    _assert_refused(rex, rexfile, 11, "base 'nosuchbase' does not exist")


def test_same_name_different_definition_is_an_update_in_place(rex: Rex, tmp_path: Path) -> None:
    ex = copy_example(tmp_path)
    rex.run("up", ex / "hello.rex")
    before = rex.jails()["hello"]
    other = tmp_path / "hello.rex"
    other.write_text(f"BASE {rex.base}\nENV X=1\n")
    done = rex.run("up", other)
    assert "Updating hello to generation 2" in done.stderr, done.stderr
    assert rex.run("exec", "hello", "--", "cat", "/etc/rexcarcer/env").stdout == "X='1'\n"
    assert rex.jails()["hello"]["ips"] == before["ips"]


def test_bad_jail_name(rex: Rex, tmp_path: Path) -> None:
    ex = copy_example(tmp_path)
    done = rex.run("up", ex / "hello.rex", "--name", "bad.name", check=False)
    assert done.returncode == 2
    assert rex.jails() == {}
