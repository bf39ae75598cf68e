"""Root in a Linux jail has a FreeBSD jail root's powers, not the host root's.

The jail's init, what ``rex exec`` runs and every build step start with the
capability bounding set lowered to jailenter.KEEP; what a FreeBSD jail cannot
do by default (jail(8): mount, make device nodes, set the host name, raw
sockets, change its network) fails here too, whoever in the jail tries."""

from __future__ import annotations

from pathlib import Path

import pytest

from rexcarcer.runtime.jailenter import KEEP
from tests.integration.conftest import Rex

pytestmark = pytest.mark.integration

MASK = sum(1 << c for c in KEEP)


def capabilities(status: str) -> dict[str, int]:
    """The Cap* lines of /proc/PID/status, as numbers."""
    out = {}
    for line in status.splitlines():
        key, _, value = line.partition(":")
        if key.startswith("Cap"):
            out[key] = int(value.strip(), 16)
    return out


def in_jail(rex: Rex, script: str) -> tuple[int, str]:
    done = rex.run("exec", "a", "--", "/bin/sh", "-c", script, check=False)
    return done.returncode, done.stdout + done.stderr


def test_every_process_in_a_jail_has_only_a_jails_capabilities(rex: Rex, tmp_path: Path) -> None:
    path = tmp_path / "a.rex"
    path.write_text(
        "BASE busybox\n"
        "PROVISION RUN cat /proc/self/status > /build-status\n"
        "PROVISION RUN printf '#!/bin/sh\\nsleep 600 &\\n' > /etc/rc\n"
    )
    rex.run("up", path)
    _, built = in_jail(rex, "cat /build-status")
    _, init = in_jail(rex, "cat /proc/1/status")
    _, daemon = in_jail(rex, "cat /proc/$(pidof sleep | cut -d' ' -f1)/status")
    _, own = in_jail(rex, "cat /proc/self/status")
    for where, status in (("build", built), ("init", init), ("rc", daemon), ("exec", own)):
        caps = capabilities(status)
        assert caps["CapBnd"] == MASK, (where, hex(caps["CapBnd"]))
        assert caps["CapEff"] & ~MASK == 0 and caps["CapPrm"] & ~MASK == 0, (where, caps)
        assert caps["CapInh"] == 0 and caps.get("CapAmb", 0) == 0, (where, caps)


@pytest.mark.parametrize(
    "attack",
    [
        "mknod /tmp/disk b 8 0",  # a block device: the host's disk
        "mount -t tmpfs none /mnt",
        "mount -t proc proc /tmp",
        "hostname evil.example.com",
        "ip addr add 203.0.113.99/24 dev eth0",  # an address that is not the jail's
        "ip link set eth0 address 02:00:00:00:00:99",
        "ping -c 1 -W 1 203.0.113.1",  # a raw socket
        "ulimit -H -n 1048576",  # above the hard limit rex gives it
    ],
)
def test_root_in_a_jail_cannot(rex: Rex, tmp_path: Path, attack: str) -> None:
    path = tmp_path / "a.rex"
    path.write_text("BASE busybox\n")
    rex.run("up", path)
    _, before = in_jail(rex, "hostname; ip addr show eth0; ulimit -H -n")
    code, out = in_jail(rex, attack)
    assert code != 0, out
    assert in_jail(rex, "hostname; ip addr show eth0; ulimit -H -n")[1] == before
    assert in_jail(rex, "ls /tmp")[1].strip() == ""


def test_a_build_step_cannot_make_a_device_either(rex: Rex, tmp_path: Path) -> None:
    path = tmp_path / "a.rex"
    path.write_text("BASE busybox\nPROVISION RUN mknod /disk b 8 0\n")
    done = rex.run("up", path, check=False)
    assert done.returncode != 0
    assert rex.jails() == {}
