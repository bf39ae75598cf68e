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


LISTEN = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", 5599))
s.settimeout(float(sys.argv[1]))
print("ready", flush=True)
try:
    while True:
        data, (src, _) = s.recvfrom(100)
        print(data.decode(), src, flush=True)
except socket.timeout:
    pass
"""

# A bound socket cannot take a source address the namespace does not hold
# (IP_FREEBIND only binds; the route lookup refuses the send), so the forger
# is a raw socket: the guard's second layer, behind the capability drop.
SEND = """
import socket, struct, sys
sys.path.insert(0, sys.argv[1])
import jailenter
def packet(src, payload):
    udp = struct.pack("!HHHH", 40000, 5599, 8 + len(payload), 0) + payload
    head = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0, 64, 17, 0,
                       socket.inet_aton(src), socket.inet_aton("203.0.113.1"))
    return head + udp
# A raw socket picks any source address: what a process holding CAP_NET_RAW
# (which a jail's root does not keep) could send.
raw = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
for tag, src in (("own", sys.argv[2]), ("forged", "203.0.113.99")):
    try:
        raw.sendto(packet(src, tag.encode()), ("203.0.113.1", 0))
        print(tag, "sent", flush=True)
    except PermissionError:
        print(tag, "refused", flush=True)
jailenter.drop_capabilities()
try:
    socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
    print("raw socket opened", flush=True)
except PermissionError:
    print("raw socket refused", flush=True)
"""


def test_a_jail_cannot_send_from_an_address_that_is_not_its_own(rex: Rex, tmp_path: Path) -> None:
    import subprocess
    import sys

    from rexcarcer.runtime import jailenter

    path = tmp_path / "a.rex"
    path.write_text("BASE busybox\n")
    rex.run("up", path)
    jail_ns, own = f"rex-{rex.token}-a", rex.ip_of("a")
    enter_dir = str(Path(jailenter.__file__).parent)

    def heard() -> tuple[list[str], str]:
        listener = subprocess.Popen(
            ["nsenter", f"--net=/run/netns/{rex.netns}", sys.executable, "-c", LISTEN, "1.5"],
            stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        try:
            assert listener.stdout is not None and listener.stdout.readline() == "ready\n"
            sent = subprocess.run(["nsenter", f"--net=/run/netns/{jail_ns}", sys.executable, "-c",
                                   SEND, enter_dir, own], check=True, timeout=30,
                                  capture_output=True, text=True).stdout  # fmt: skip
            out, _ = listener.communicate(timeout=30)
        finally:
            if listener.poll() is None:
                listener.kill()
                listener.wait()
        return out.split("\n"), sent

    got, sent = heard()
    assert f"own {own}" in got and not any(line.startswith("forged") for line in got), got
    # the guard refuses the send; the jail's root cannot open a raw socket at all
    assert "forged refused" in sent and "raw socket refused" in sent, sent
    # the guard is what stops it: without the jail's table the forged source gets through
    subprocess.run(["nsenter", f"--net=/run/netns/{jail_ns}", "nft", "delete", "table", "inet",
                    "rexcarcer_source"], check=True)  # fmt: skip
    got, sent = heard()
    assert "forged 203.0.113.99" in got and "forged sent" in sent, (got, sent)
