"""The firewall driver: the part of the host's firewall that rex owns.

Linux: nft.NftFirewall (the nftables table ``inet rexcarcer``); FreeBSD:
pf.PfFirewall (the pf anchors under ``rexcarcer/``); tests: fake.FakeFirewall.
Every implementation replaces rex's whole part at once and leaves the rest of
the host's firewall alone.
"""

from __future__ import annotations

from typing import Protocol

from rexcarcer.firewall.rules import Ruleset


class Firewall(Protocol):
    def apply(self, ruleset: Ruleset) -> bool:
        """Make rex's part of the firewall hold exactly ``ruleset``.

        Returns False when it already did (nothing was loaded). Raises
        FirewallError when the OS refuses it; the previous rules then stay."""
        ...

    def apply_commands(self, ruleset: Ruleset) -> list[list[str]]:
        """The commands ``apply(ruleset)`` would run now that change the host,
        in order (``rex plan``); empty when rex's part already holds it. Reads
        the current state, changes nothing."""
        ...

    def current(self) -> Ruleset:
        """What rex's part holds now, read back from the OS (an empty Ruleset
        when there is none). pf reads back the forwards only (pf.py)."""
        ...

    def missing_hooks(self) -> list[str]:
        """What the host's own firewall configuration lacks for rex's rules to
        be evaluated at all (pf: the anchor lines of pf.conf(5)); empty when
        nothing is missing (nftables evaluates every table's base chains)."""
        ...

    def clear(self) -> None:
        """Remove rex's part entirely; nothing else. Idempotent."""
        ...
