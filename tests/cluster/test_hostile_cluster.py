"""A jail against the cluster's real etcd: the member on its own host and the
member on another host answer its host, never the jail (netpolicy/guard.py).
tests/integration/test_hostile.py has the single-host cases."""

from __future__ import annotations

import ipaddress
from pathlib import Path

from tests.cluster.conftest import ClusterHost
from tests.integration.conftest import sh

ETCD = {"h1": "198.51.100.11", "h2": "198.51.100.12"}  # conftest.py: SWITCH.10+i
ASK = "printf 'GET /version HTTP/1.0\\r\\n\\r\\n' | busybox nc -w 2 {} 2379"


def _gateway(h: ClusterHost, name: str) -> str:
    return str(next(ipaddress.ip_network(str(h.hosts()[name]["subnet"])).hosts()))


def _from_jail(h: ClusterHost, jail: str, addr: str) -> str:
    return h.rex("exec", jail, "--", "sh", "-c", ASK.format(addr), check=False).stdout


def _route_out(h: ClusterHost, jail: str, gateway: str) -> None:
    """What root in the jail can do: route the hosts' network through its host."""
    h.rex("exec", jail, "--", "ip", "route", "replace", "198.51.100.0/24", "via", gateway)


def test_a_jail_reaches_no_etcd_member(zfs_hosts: list[ClusterHost], tmp_path: Path) -> None:
    h1, h2 = zfs_hosts[0], zfs_hosts[1]
    (tmp_path / "hostile.rex").write_text("BASE busybox\n")
    gw1, jail_net1 = _gateway(h1, "h1"), str(h1.hosts()["h1"]["subnet"])
    forwarding = h1.ns("sysctl", "-n", "net.ipv4.ip_forward").stdout.strip()
    back = h2.ns("ip", "route", "show", jail_net1).stdout.strip()
    try:
        h1.rex("up", tmp_path / "hostile.rex", "--host", "h1")
        # a path exists: h1 forwards, h2 routes back to h1's jails
        sh("ip", "netns", "exec", h1.netns, "sysctl", "-q", "-w", "net.ipv4.ip_forward=1")
        if not back:
            sh("ip", "-n", h2.netns, "route", "add", jail_net1, "via", ETCD["h1"])
        _route_out(h1, "hostile", gw1)
        for addr in ETCD.values():
            assert "etcdserver" in h1.ns("sh", "-c", ASK.format(addr)).stdout  # the host can
            assert _from_jail(h1, "hostile", addr) == "", addr  # the jail cannot
        # not for want of a path: without rex's tables the jail gets through
        for h in (h1, h2):
            h.ns("nft", "delete", "table", "inet", "rexcarcer")
        for addr in ETCD.values():
            assert "etcdserver" in _from_jail(h1, "hostile", addr), addr
        # a start loads the guard again
        h1.rex("restart", "hostile")
        _route_out(h1, "hostile", gw1)
        for addr in ETCD.values():
            assert _from_jail(h1, "hostile", addr) == "", addr
    finally:
        h1.rex("destroy", "hostile", check=False)
        if not back:
            sh("ip", "-n", h2.netns, "route", "del", jail_net1, check=False)
        if forwarding:
            sh("ip", "netns", "exec", h1.netns, "sysctl", "-q", "-w",
               f"net.ipv4.ip_forward={forwarding}")  # fmt: skip
