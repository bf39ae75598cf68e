"""Host firewall for jails: published ports, egress NAT, and the guard that
keeps jails away from the host's control ports (DESIGN section 4).

rex owns exactly one piece of the host's firewall and never touches the rest:
the nftables table ``inet rexcarcer`` on Linux, the pf anchors under
``rexcarcer/`` on FreeBSD.

::

    rules.py   pure: the desired ruleset (PortForward, Masquerade, Guard, Ruleset)
               and its validation; no OS knowledge (netpolicy/guard.py computes
               a host's ruleset; the platform holds its driver)
    nft.py     Linux: the Ruleset as one nftables JSON batch for ``nft -j -f -``,
               the reader of ``nft -j list table inet rexcarcer``, NftFirewall
    pf.py      FreeBSD: the Ruleset as pf.conf(5) text per anchor, the pfctl(8)
               argv, the check that pf.conf hooks the anchors, PfFirewall
    base.py    the Firewall Protocol (apply, apply_commands, current, clear)
    fake.py    FakeFirewall, in memory, for unit tests
"""

from __future__ import annotations

from rexcarcer.errors import RexError


class FirewallError(RexError):
    """A firewall rule is invalid, or nft/pfctl refused the ruleset (exit 42).

    Lives beside the firewall code rather than in ``errors.py`` so that the
    package stays self-contained; its exit code is unique in the tree."""

    exit_code = 42
