"""Placement (pure) and the build context that travels to the chosen host."""

from __future__ import annotations

import io
import ipaddress
import tarfile
from pathlib import Path

import pytest

from rexcarcer import buildctx as context
from rexcarcer.cluster import ClusterError
from rexcarcer.cluster.model import HostInfo
from rexcarcer.cluster.placement import place
from rexcarcer.errors import Conflict, NotFound, UnsafePath, UsageError
from rexcarcer.rexfile.parser import load

HOSTS = [
    HostInfo("h1", "198.51.100.11", "203.0.113.0/26", True, 3),
    HostInfo("h2", "198.51.100.12", "203.0.113.64/26", True, 1),
    HostInfo("h3", "198.51.100.13", "203.0.113.128/26", False, 0),
    HostInfo("h4", "198.51.100.14", "203.0.113.192/26", True, 1),
]


def test_the_live_host_with_fewest_jails_wins_ties_by_name() -> None:
    assert place(HOSTS).host == "h2"  # h3 has none but is down
    assert place(HOSTS[:1]).host == "h1"


def test_host_is_honoured_and_must_be_alive_and_known() -> None:
    assert place(HOSTS, wanted="h1").host == "h1"
    with pytest.raises(ClusterError, match="down"):
        place(HOSTS, wanted="h3")
    with pytest.raises(NotFound, match="no host 'h9'"):
        place(HOSTS, wanted="h9")


def test_a_pinned_ip_goes_to_the_host_whose_subnet_holds_it() -> None:
    pinned = ipaddress.ip_address("203.0.113.200")
    assert place(HOSTS, pinned=pinned).host == "h4"
    assert place(HOSTS, pinned=pinned, wanted="h4").host == "h4"
    with pytest.raises(Conflict, match="h4"):
        place(HOSTS, pinned=pinned, wanted="h1")
    # an address outside every host subnet: placed as usual (IPAM judges it there)
    assert place(HOSTS, pinned=ipaddress.ip_address("192.0.2.9")).host == "h2"


def test_an_existing_jail_stays_on_its_host() -> None:
    assert place(HOSTS, owner="h1").host == "h1"
    with pytest.raises(Conflict, match="already exists on host 'h1'"):
        place(HOSTS, owner="h1", wanted="h2")


def test_no_live_host() -> None:
    with pytest.raises(ClusterError, match="no live host"):
        place([HOSTS[2]])


def _project(tmp_path: Path) -> Path:
    src = tmp_path / "proj"
    (src / "site" / "css").mkdir(parents=True)
    (src / "site" / "index.html").write_text("<h1>hi</h1>")
    (src / "site" / "css" / "a.css").write_text("h1{}")
    (src / "rc").write_text("#!/bin/sh\n")
    (src / "secret.txt").write_text("not named by the file")
    rex = src / "web.rex"
    rex.write_text("BASE busybox\nPROVISION COPY site /var/www\nPROVISION COPY rc /etc/rc\n")
    return rex


def test_the_context_holds_the_file_and_its_copy_sources_only(tmp_path: Path) -> None:
    original = load(_project(tmp_path))
    data = context.pack(original)
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        names = sorted(tar.getnames())
    assert names == ["rc", "site", "site/css", "site/css/a.css", "site/index.html", "web.rex"]
    dest = tmp_path / "unpacked"
    dest.mkdir()
    path = context.unpack(data, dest, "web.rex")
    assert load(path).steps == original.steps
    assert (dest / "site" / "css" / "a.css").read_text() == "h1{}"
    assert not (dest / "secret.txt").exists()


def test_a_hostile_context_is_refused(tmp_path: Path) -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo("../escape")
        info.size = 1
        tar.addfile(info, io.BytesIO(b"x"))
    with pytest.raises(UnsafePath, match=r"member '\.\./escape' contains '\.\.'"):
        context.unpack(buf.getvalue(), tmp_path, "web.rex")
    with pytest.raises(UsageError, match=r"bad \.rex file name"):
        context.unpack(b"", tmp_path, "../web.rex")
    assert not (tmp_path.parent / "escape").exists()


def test_a_copy_source_outside_the_directory_does_not_travel(tmp_path: Path) -> None:
    rex = tmp_path / "d" / "x.rex"
    rex.parent.mkdir()
    rex.write_text("BASE busybox\nPROVISION COPY link /etc\n")
    (tmp_path / "etc").mkdir()
    (rex.parent / "link").symlink_to("../etc")
    with pytest.raises(UnsafePath):
        context.pack(load(rex))
