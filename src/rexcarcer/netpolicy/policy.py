"""``NetworkPolicy``: what the engine calls (engine/base.py ``NetPolicy``) and
what ``rex agent`` applies on every tick."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from rexcarcer.firewall.rules import Masquerade, PortForward, Ruleset
from rexcarcer.host import Host
from rexcarcer.netpolicy import admit as admission
from rexcarcer.netpolicy import publish
from rexcarcer.netpolicy.facts import gather
from rexcarcer.netpolicy.guard import build_ruleset, guard_for, unbound_ports
from rexcarcer.rexfile.ast import IPInterface, Rexfile

log = logging.getLogger("rexcarcer.netpolicy")


class RuleSource(Protocol):
    """A feature that adds to this host's ruleset (published ports, NAT)."""

    def forwards(self, host: Host) -> Sequence[PortForward]: ...

    def masquerade(self, host: Host) -> Masquerade | None: ...


@dataclass(frozen=True)
class NetworkPolicy:
    sources: Sequence[RuleSource] = ()

    def admit(self, host: Host, rexfile: Rexfile, name: str) -> None:
        admission.admit(host, rexfile, name)
        if rexfile.publish or host.config.nat:
            publish.check(host, rexfile, name, gather(host))

    def admit_arrival(
        self, host: Host, name: str, ip: IPInterface | None, hostname: str | None
    ) -> None:
        admission.admit_arrival(host, name, ip, hostname)

    def ruleset(self, host: Host) -> Ruleset:
        """This host's whole ruleset, as the host, the store and the
        configuration say now."""
        layout = host.platform.unbound_layout()
        unbound = unbound_ports(dict.fromkeys((layout.conf, layout.server_conf)))
        guard = guard_for(host.config, gather(host), unbound)
        forwards = [f for s in self.sources for f in s.forwards(host)]
        masq = next((m for s in self.sources if (m := s.masquerade(host)) is not None), None)
        return build_ruleset(guard, forwards, masq)

    def guard(self, host: Host) -> None:
        # one writer at a time on this host: parallel `rex up`s load it once
        with host.lock("firewall"):
            if host.platform.firewall.apply(self.ruleset(host)):
                log.info("firewall: rex's rules loaded")

    def guard_commands(self, host: Host) -> list[list[str]]:
        return host.platform.firewall.apply_commands(self.ruleset(host))
