"""Firewall rules: what a Ruleset accepts, what it refuses and how it says so."""

from __future__ import annotations

import ipaddress

import pytest

from rexcarcer.firewall import FirewallError
from rexcarcer.firewall.fake import FakeFirewall
from rexcarcer.firewall.rules import (
    CONTROL_PORTS,
    Guard,
    Masquerade,
    PortForward,
    Ruleset,
)
from rexcarcer.rexfile.ast import Proto
from tests.firewall_support import sample_ruleset

ip = ipaddress.ip_address
net = ipaddress.ip_network
TCP, UDP = Proto.TCP, Proto.UDP
JAILS = net("203.0.113.0/24")


def fwd(jail: str, port: int = 8080, on: str | None = None, proto: Proto = TCP) -> PortForward:
    return PortForward(jail, proto, port, ip("203.0.113.5"), 80, ip(on) if on else None)


def test_two_jails_on_one_host_port_are_refused_naming_both() -> None:
    with pytest.raises(FirewallError, match="jails api and web both publish tcp port 8080") as err:
        Ruleset((fwd("web"), fwd("api")))
    assert err.value.hint is not None and "another host port" in err.value.hint
    # "any address" overlaps every single address of the same family
    with pytest.raises(FirewallError, match=r"api and web both publish tcp port 8080 on 198\.51"):
        Ruleset((fwd("web", on="198.51.100.1"), fwd("api")))
    with pytest.raises(FirewallError, match="jail web publishes tcp port 8080 twice on every"):
        Ruleset((fwd("web"), fwd("web")))


def test_forwards_that_do_not_overlap_are_accepted() -> None:
    rs = Ruleset((
        fwd("web", on="198.51.100.1"), fwd("api", on="198.51.100.2"),  # two addresses
        fwd("dns", proto=UDP),  # another protocol
        PortForward("v6", TCP, 8080, ip("2001:db8::5"), 80),  # another family
    ))  # fmt: skip
    assert rs.jails() == ("api", "dns", "v6", "web")


@pytest.mark.parametrize("port", [0, 65536, -1, True, "80", 80.0])
def test_ports_outside_1_to_65535_or_not_ints_are_refused(port: object) -> None:
    with pytest.raises(FirewallError, match="is not a port"):
        PortForward("web", TCP, port, ip("203.0.113.5"), 80)  # type: ignore[arg-type]
    with pytest.raises(FirewallError, match="is not a port"):
        PortForward("web", TCP, 80, ip("203.0.113.5"), port)  # type: ignore[arg-type]
    with pytest.raises(FirewallError, match="is not a port"):
        Guard(JAILS, "rex0", ((TCP, port),))  # type: ignore[arg-type]


@pytest.mark.parametrize("jail", ["", "Web", "a b", 'x"; rdr', "a/b", "1234", "x" * 64, "a.b"])
def test_jail_names_that_are_not_dns_labels_are_refused(jail: str) -> None:
    with pytest.raises(FirewallError, match="bad jail name"):
        PortForward(jail, TCP, 8080, ip("203.0.113.5"), 80)


def test_addresses_are_checked() -> None:
    with pytest.raises(FirewallError, match="not an IP address"):
        PortForward("web", TCP, 8080, "203.0.113.5", 80)  # type: ignore[arg-type]
    with pytest.raises(FirewallError, match="IPv4 but the jail's address 2001:db8::5 is IPv6"):
        PortForward("web", TCP, 8080, ip("2001:db8::5"), 80, ip("198.51.100.1"))
    with pytest.raises(FirewallError, match="cannot publish on loopback"):
        fwd("web", on="127.0.0.1")
    with pytest.raises(FirewallError, match="cannot publish to loopback"):
        PortForward("web", TCP, 8080, ip("127.0.0.1"), 80)
    with pytest.raises(FirewallError, match="not a unicast address"):
        fwd("web", on="0.0.0.0")
    with pytest.raises(FirewallError, match="not a protocol"):
        PortForward("web", "sctp", 8080, ip("203.0.113.5"), 80)  # type: ignore[arg-type]


@pytest.mark.parametrize("iface", ["", "eth0 ", "(em0)", "em0}", "0em", "a" * 16, "any", "self"])
def test_interface_names_are_strict(iface: str) -> None:
    with pytest.raises(FirewallError, match="not an interface name"):
        Masquerade(JAILS, iface)
    with pytest.raises(FirewallError, match="not an interface name"):
        Guard(JAILS, iface)


def test_interface_names_kernels_use_are_accepted() -> None:
    for name in ("eth0", "rex0", "em0", "vtnet0", "lagg0.100", "br-lan", "wg_0", "a" * 15):
        assert Masquerade(JAILS, name).out_iface == name


def test_masquerade_keeps_networks_of_its_own_family_only() -> None:
    m = Masquerade(JAILS, None, (net("10.0.0.0/8"), net("10.0.0.0/8"), net("172.16.0.0/12")))
    assert m.keep == (net("10.0.0.0/8"), net("172.16.0.0/12"))  # sorted, no duplicates
    with pytest.raises(FirewallError, match="2001:db8::/32 is IPv6, the subnet is IPv4"):
        Masquerade(JAILS, None, (net("2001:db8::/32"),))


def test_guard_never_closes_dns_or_syslog_to_the_host() -> None:
    for spec in ((UDP, 53), (TCP, 53), (UDP, 514)):
        with pytest.raises(FirewallError, match="DNS or syslog"):
            Guard(JAILS, "rex0", (*CONTROL_PORTS, spec))
    Guard(JAILS, "rex0", ((TCP, 514),))  # rsh/syslog-tls over tcp is no jail service


def test_guard_refuses_addresses_of_the_jail_subnet() -> None:
    with pytest.raises(FirewallError, match=r"203\.0\.113\.1 is inside the jail subnet"):
        Guard(JAILS, "rex0", CONTROL_PORTS, (ip("203.0.113.1"),))


def test_guard_defaults_to_the_control_ports_and_sorts() -> None:
    g = Guard(JAILS, "rex0", addresses=(ip("2001:db8::9"), ip("198.51.100.8"), ip("198.51.100.7")))
    assert g.ports_of(TCP) == (2379, 2380, 7443, 8953)
    assert g.ports_of(UDP) == ()
    assert g.addresses_of(4) == (ip("198.51.100.7"), ip("198.51.100.8"))
    assert g.addresses_of(6) == (ip("2001:db8::9"),)


def test_rulesets_saying_the_same_compare_equal() -> None:
    a, b = fwd("web", 8080), fwd("api", 9090)
    assert Ruleset((a, b)) == Ruleset((b, a))
    assert Ruleset((a, b)).forwards == (b, a)
    rs = sample_ruleset()
    assert rs.jail_nets == (JAILS,)
    assert Ruleset().empty and not rs.empty


def test_fake_firewall_applies_once_and_can_fail_like_nft() -> None:
    fw = FakeFirewall()
    rs = sample_ruleset()
    assert fw.apply(rs) is True
    assert fw.apply(rs) is False
    assert fw.current() == rs and fw.loads == 1
    fw.fail_with = "nft said no"
    with pytest.raises(FirewallError, match="nft said no"):
        fw.apply(Ruleset())
    assert fw.current() == rs  # a refused ruleset leaves the old one
    fw.clear()
    assert fw.current() == Ruleset()
