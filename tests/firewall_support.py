"""One ruleset with every kind of rule, for the firewall's golden files (unit)
and for loading into a real nft (integration)."""

from __future__ import annotations

import ipaddress
from pathlib import Path

from rexcarcer.firewall.rules import (
    CONTROL_PORTS,
    Guard,
    Masquerade,
    PortForward,
    Ruleset,
)
from rexcarcer.rexfile.ast import Proto

DATA = Path(__file__).resolve().parent / "data" / "firewall"

ip = ipaddress.ip_address
net = ipaddress.ip_network


def sample_ruleset() -> Ruleset:
    return Ruleset(
        forwards=(
            PortForward("web", Proto.TCP, 8080, ip("203.0.113.5"), 80),
            PortForward("dns1", Proto.UDP, 5353, ip("203.0.113.6"), 53, ip("198.51.100.1")),
            PortForward("v6", Proto.TCP, 8443, ip("2001:db8:1::5"), 443),
        ),
        masquerade=Masquerade(net("203.0.113.0/24"), "ext0", (net("10.0.0.0/8"),)),
        guard=Guard(
            net("203.0.113.0/24"),
            "rex0",
            (*CONTROL_PORTS, (Proto.UDP, 9999)),
            (ip("198.51.100.7"), ip("198.51.100.8"), ip("2001:db8::9")),
        ),
    )
