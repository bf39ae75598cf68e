"""The network policy a host's engine gets, and the jail hook that keeps a
jail's published ports in the firewall exactly while it runs.

``started`` loads the ruleset with the jail's forwards (the jail runs by
then, so the RuleSource counts it); ``stopped`` loads it without them before
the jail is taken down (hooks stop in reverse order, and this one is last in
the list, so its ports go first). ``reapply`` loads what the store and the
runtime say now: `rex agent` calls it at start and on every tick (through
the policy's guard), `rex host setup` once, so a host or an agent that
restarts puts its running jails' ports back.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence

from rexcarcer.host import Host
from rexcarcer.model.jail import JailRecord
from rexcarcer.model.recordprop import RebuiltJail
from rexcarcer.netpolicy.policy import NetworkPolicy
from rexcarcer.netpolicy.publish import PublishSource, local_records
from rexcarcer.runtime.base import JailSpec

log = logging.getLogger("rexcarcer.netpolicy")


def default_policy(without: Iterable[str] = ()) -> NetworkPolicy:
    """The guard plus published ports and NAT (what wiring gives the engine)."""
    return NetworkPolicy(sources=(PublishSource(frozenset(without)),))


def needs_forwarding(host: Host) -> bool:
    """Whether DNAT to a jail, NAT or a public address needs the host to route."""
    config = host.config
    return config.nat or bool(config.public_ips) or any(r.publish for r in local_records(host))


def reapply(host: Host) -> bool:
    """Load this host's whole ruleset as it should be now (True: it changed)."""
    if needs_forwarding(host):
        host.platform.enable_forwarding()
    with host.lock("firewall"):
        return host.platform.firewall.apply(default_policy().ruleset(host))


def firewall_setup(host: Host) -> str:
    """`rex host setup`'s firewall part: forwarding where needed, then ``reapply``."""
    forwarding = needs_forwarding(host)
    reapply(host)
    ports = sum(len(r.publish) for r in local_records(host))
    nat = f"NAT of {host.config.subnet} on" if host.config.nat else "NAT off"
    fwd = (
        "IP forwarding enabled (PUBLISH, NAT or public addresses need it)"
        if forwarding
        else "IP forwarding not needed"
    )
    return f"firewall loaded: {ports} published port(s) declared, {nat}; {fwd}"


class PublishHook:
    name = "publish"

    def prepare(self, host: Host, rec: JailRecord, spec: JailSpec) -> None:
        return None

    def started(self, host: Host, rec: JailRecord, spec: JailSpec) -> None:
        public = rec.address is not None and rec.address.ip not in host.config.subnet
        if rec.publish or public or host.config.nat:
            # DNAT to a jail, NAT and a proxied public address are routing
            host.platform.enable_forwarding()
        if not rec.publish:
            return
        default_policy().guard(host)
        log.info("jail %s: published %s", rec.name, ", ".join(map(str, rec.publish)))

    def stopped(self, host: Host, rec: JailRecord) -> None:
        if rec.publish:
            default_policy(without=(rec.name,)).guard(host)

    def destroyed(self, host: Host, rec: JailRecord) -> None:
        return None

    def rebuilt(self, host: Host, jails: Sequence[RebuiltJail]) -> list[tuple[str, str]]:
        # the loaded ruleset lives in the kernel, not in the store: the running
        # jails' ports stay forwarded; `rex agent` (every tick) and `rex host
        # setup` load it again from the rebuilt records (reapply)
        return []
