"""Many hosts on one etcd (DESIGN section 6).

::

    model.py       pure: the key layout, records, subnet planning, the views the
                   agent and ``rex hosts`` compute from a snapshot of the store
    membership.py  ``rex cluster init / join / leave``, ``rex hosts``
    hostconf.py    the host's rexcarcer.toml, rewritten by join and leave
    routes.py      routes to the other hosts' jail subnets (argv + parser + sync)
    dnssync.py     the local unbound made to serve every live host's records
    jailsync.py    this host's jails started or stopped as their records want
    skydns.py      the optional ``/skydns/`` mirror for CoreDNS
    cashare.py     the cluster CA's certificates (its key only with --share-ca) in etcd
    tokens.py      one-time join tokens and the HMAC that authenticates a join
    enroll.py      a host's certificates through the CA host: join, renew
    signer.py      the CA host's side: verify and sign requests, the root CRL
    hostcerts.py   what the cluster CA signed for each host; revocation at leave
    auth.py        who calls the agents' API: a host certificate, or nobody
    agent.py       ``rex agent``: lease, watch, DNS, routes, jails, SkyDNS, API
    tls.py         the hosts' certificates for the agents' mutual-TLS API
                   (agent/remote.py serves it)
    auth.py        who may use that API: a registered host's certificate
    client.py      ``rex up`` placed (placement.py) and the lifecycle verbs,
                   here or through another host's agent (context.py: the tar)

Keys under ``/rexcarcer/v1/`` (state/etcd.py)::

    cluster/config         {"cidr", "zone", "host_prefix", "version"}   init, no lease
    cluster/ca             {"fingerprint", "host", "cert", ...}         init, create-if-absent
    cluster/tokens/<id>    {"sha256", "expires", ...}: a join token     init, token; one use
    join/<id>[/answer]     a join or renewal request, and its answer    join, renew; the CA host
    pki/hosts/<host>       the host's certificate; pki/jail-cas/<host>  the CA host
    hosts/<host>           {"name", "address", "subnet", "joined"}      join, no lease
    hosts/<host>/alive     {"since", "pid"}                             the host's lease
    subnets/<net>_<len>    {"host"}                                     create-if-absent
    jails/<jail>           the jail record (engine/jails.py)            create-if-absent
    ipam/<address>         {"jail", "host"}                             create-if-absent
    names/<fqdn>           {"jail", "host"}                             create-if-absent
    dns/<jail>             {"jail", "host", "records"}                  dns/publish.py

Claims (subnets, jails, addresses, names) never sit on a lease; only the
``alive`` marker does. A host whose lease lapses keeps its claims, but every
agent stops serving its DNS records until it is back.
"""

from __future__ import annotations

from rexcarcer.errors import RexError


class ClusterError(RexError):
    """Cluster membership: no cluster at the endpoints, a host name taken, a CIDR
    exhausted (exit 37)."""

    exit_code = 37


class EnrollError(ClusterError):
    """Joining or renewing through the CA host: a join token refused, expired or
    already used, a request the CA host refused, or no answer in time (exit 44)."""

    exit_code = 44


class AgentApiError(ClusterError):
    """The agents' API: no credentials, an agent unreachable or refusing TLS, a
    bad request (exit 38)."""

    exit_code = 38


class RemoteError(RexError):
    """An error another host's agent reported; it keeps that error's exit code."""

    def __init__(self, host: str, message: str, *, hint: str | None, exit_code: int) -> None:
        super().__init__(f"on host {host}: {message}", hint=hint)
        self.exit_code = exit_code
