"""The network policy of a host towards its jails ("a jail is an adversary").

A jail's owner names its ``IP`` and ``HOSTNAME``, and root inside a jail
sends what it likes: neither may reach what runs the cluster.

::

    facts.py   what the policy looks at: this host's addresses (the platform),
               the etcd endpoints, the other hosts and their jail subnets (the
               store's hosts/ and subnets/), the addresses jails hold (ipam/)
    admit.py   the admission of a .rex before anything changes: its IP must lie
               in the jail subnet or a declared public range and be nobody
               else's; its HOSTNAME must not claim a host's, a service's or
               another jail's name (dns/records.check_hostname)
    guard.py   this host's firewall Ruleset: the Guard that drops jails'
               (and build steps') connections to the agent API, etcd, unbound's
               control port and the other hosts; forwards and NAT as inputs
    policy.py  NetworkPolicy, what the engine calls (engine/base.py NetPolicy)
    publish.py PUBLISH and egress NAT: their admission (host port free, allowed,
               not a control port; ON one of the host's addresses; pf hooks
               present) and the RuleSource giving running jails' forwards and
               the masquerade
    hook.py    the policy wiring gives the engine, the jail hook that loads a
               jail's published ports when it starts and removes them when it
               stops, and ``reapply`` for `rex agent` and `rex host setup`

The engine calls ``admit`` in ``rex up`` and ``rex plan`` and ``guard`` before
a jail or a build step starts; ``rex agent`` calls ``guard`` at start and on
every idle tick, so the rules follow the cluster as hosts come and go.
"""

from __future__ import annotations

from rexcarcer.dns import DnsError
from rexcarcer.errors import AddressError, Conflict
from rexcarcer.firewall import FirewallError


class AddressRefused(AddressError):
    """A .rex's ``IP`` is one a jail of this host may not have (exit 46)."""

    exit_code = 46


class HostnameRefused(DnsError):
    """A .rex's ``HOSTNAME`` is not a name a jail may have: it claims a name
    rex gives to hosts, services or another jail, or it is no valid host name
    (exit 47)."""

    exit_code = 47


class PortRefused(FirewallError):
    """A ``PUBLISH`` host port this host does not give to jails: below 1024
    without ``publish_allow``, or one of the host's own control ports (exit 75)."""

    exit_code = 75


class PortTaken(Conflict):
    """A ``PUBLISH`` host port another jail of this host publishes (exit 76)."""

    exit_code = 76


class PublishAddressRefused(AddressError):
    """``PUBLISH ... ON ADDRESS`` names no address of this host (exit 77)."""

    exit_code = 77


class HooksMissing(FirewallError):
    """PUBLISH or egress NAT on a FreeBSD host whose loaded pf ruleset lacks
    the rexcarcer anchor lines (exit 78)."""

    exit_code = 78
