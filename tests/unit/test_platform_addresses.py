"""The host's own addresses, as each platform reads them (the network policy
refuses them as jail IPs)."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from rexcarcer.platform import freebsd, linux

pytestmark = pytest.mark.unit

DATA = Path(__file__).resolve().parents[1] / "data"


def test_linux_reads_every_interface_s_addresses() -> None:
    """ip-j-addr-show.json: `ip -j addr show` (iproute2 6.1, Debian 12) in a
    namespace with lo, the bridge rex0 and a veth with two addresses."""
    found = linux.parse_addresses((DATA / "platform" / "ip-j-addr-show.json").read_text())
    assert [str(a) for a in found if not a.is_link_local] == [
        "127.0.0.1",
        "::1",
        "203.0.113.1",
        "2001:db8::1",
        "198.51.100.11",
        "198.51.100.12",
    ]
    assert linux.addresses_argv() == ["ip", "-j", "addr", "show"]


def test_freebsd_reads_inet_and_inet6_lines() -> None:
    """ifconfig-a.txt is written from sbin/ifconfig's printers (af_inet.c
    print_addr(), af_inet6.c), not captured on a FreeBSD host."""
    found = freebsd.parse_addresses((DATA / "freebsd" / "ifconfig-a.txt").read_text())
    assert found == tuple(ipaddress.ip_address(a) for a in (
        "198.51.100.11", "198.51.100.20", "fe80::5a9c:fcff:fe10:ffc1", "2001:db8::11",
        "127.0.0.1", "::1", "fe80::1", "203.0.113.1", "192.0.2.9"))  # fmt: skip
    assert freebsd.parse_addresses("\tinet 198.51.100.7/24 broadcast 198.51.100.255\n") == (
        ipaddress.ip_address("198.51.100.7"),)  # fmt: skip
