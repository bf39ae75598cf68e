"""``rex cluster init / join / leave`` and ``rex hosts``: the store side.

Every claim is a create-if-absent transaction, so two hosts joining at once
never get one subnet, and ``init`` on a cluster that exists only confirms
identical settings.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from rexcarcer.cluster import ClusterError, model
from rexcarcer.cluster.model import Network, Settings
from rexcarcer.errors import Conflict
from rexcarcer.state.base import Compare, Delete, Entry, Put, Store, create_json, dumps
from rexcarcer.state.lease import Leases


def view(store: Store) -> dict[str, Entry]:
    """The records the membership and listing logic read (not ipam/ or dns/)."""
    out: dict[str, Entry] = {}
    for prefix in (model.CONFIG, model.HOSTS, model.SUBNETS, model.JAILS):
        out.update({e.key: e for e in store.list(prefix)})
    return out


def settings(store: Store) -> Settings:
    entry = store.get(model.CONFIG)
    if entry is None:
        raise ClusterError(
            "no RexCarcer cluster is set up in this etcd",
            hint="run `rex cluster init --etcd URLS` once, then `rex cluster join` on each host",
        )
    return Settings.from_json(entry.json())


def init(store: Store, wanted: Settings) -> tuple[Settings, bool]:
    """Store the cluster's settings; (settings, whether this call created them)."""
    if create_json(store, model.CONFIG, wanted.as_json()):
        return wanted, True
    have = settings(store)
    if have != wanted:
        raise Conflict(
            f"a cluster with other settings exists here (CIDR {have.cidr}, zone {have.zone}, "
            f"host subnets /{have.host_prefix})",
            hint="join it with `rex cluster join`, or use other etcd endpoints",
        )
    return have, False


@dataclass(frozen=True, slots=True)
class Joined:
    name: str
    address: str
    subnet: Network
    settings: Settings

    def as_json(self) -> dict[str, Any]:
        return {"host": self.name, "address": self.address, "subnet": str(self.subnet),
                "zone": self.settings.zone, "cidr": str(self.settings.cidr)}  # fmt: skip


def local_address(endpoint: str) -> str:
    """The source address this host uses towards ``endpoint`` (a UDP connect sends
    nothing): the address other hosts reach this one on."""
    url = urlsplit(endpoint)
    host, port = url.hostname or "127.0.0.1", url.port or 2379
    try:
        info = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)[0]
        with socket.socket(info[0], socket.SOCK_DGRAM) as sock:
            sock.connect(info[4])
            return str(sock.getsockname()[0])
    except OSError as exc:
        raise ClusterError(
            f"cannot find this host's address towards {endpoint}: {exc}",
            hint="pass --address ADDR",
        ) from exc


def claim_subnet(store: Store, conf: Settings, host: str) -> Network:
    """This host's jail subnet: the one it holds, or the lowest free one."""
    for _ in range(100):
        claims = model.subnet_claims({e.key: e for e in store.list(model.SUBNETS)})
        mine = next((net for net, owner in claims.items() if owner == host), None)
        if mine is not None:
            return mine
        candidate = next(model.free_subnets(conf, claims), None)
        if candidate is None:
            raise ClusterError(
                f"the cluster CIDR {conf.cidr} has no free /{conf.host_prefix} left",
                hint="remove hosts that left (`rex cluster leave`) or start a larger cluster",
            )
        if create_json(store, model.subnet_key(candidate), {"host": host}):
            return candidate
    raise ClusterError(f"could not claim a subnet of {conf.cidr}: too much contention")


def join(store: Store, leases: Leases | None, name: str, address: str, ttl: int = 15) -> Joined:
    model.check_host_name(name)
    ipaddress.ip_address(address)
    conf = settings(store)
    current = store.get(model.host_key(name))
    other = current is not None and current.json().get("address") not in (address, None)
    if current is not None and other and store.get(model.alive_key(name)) is not None:
        raise Conflict(
            f"host name {name!r} is taken by a live host at {current.json()['address']}",
            hint="pick another name with --host-name (or REX_HOST)",
        )
    subnet = claim_subnet(store, conf, name)
    rec = {"name": name, "address": address, "subnet": str(subnet), "joined": int(time.time())}
    if current is not None:
        rec["joined"] = current.json().get("joined", rec["joined"])
    store.commit([], [Put(model.host_key(name), dumps(rec))])
    if leases is not None:  # alive until the agent takes over (or the TTL runs out)
        lease = leases.grant(ttl)
        leases.put_leased(model.alive_key(name), alive_value(), lease)
    return Joined(name, address, subnet, conf)


def alive_value(api: str | None = None) -> str:
    """The liveness key's value; with the agent's API URL when it serves one."""
    value: dict[str, Any] = {"since": int(time.time()), "pid": os.getpid()}
    if api is not None:
        value["api"] = api
    return dumps(value)


def leave(store: Store, name: str, *, force: bool = False) -> list[str]:
    """Release this host's subnet and registration, and revoke its host certificate
    and jail CA in the same transaction (the agents' API refuses the certificate
    from then on); the keys removed."""
    from rexcarcer.cluster.hostcerts import leave_ops

    data = view(store)
    jails = sorted(
        e.json()["name"] for _, e in model.under(data, model.JAILS) if e.json().get("host") == name
    )
    if jails and not force:
        raise Conflict(
            f"host {name!r} still has jails: {', '.join(jails)}",
            hint="destroy them first (`rex destroy NAME`), or pass --force to leave them behind",
        )
    keys = [model.host_key(name), model.alive_key(name)]
    keys += [model.subnet_key(n) for n, h in model.subnet_claims(data).items() if h == name]
    present = [k for k in keys if k in data or store.get(k) is not None]
    entries = [store.get(k) for k in present]
    compares = [Compare(e.key, e.revision) for e in entries if e is not None]
    revoke = leave_ops(store, name)
    if not store.commit(compares, [*(Delete(k) for k in present), *revoke]):
        raise Conflict(f"host {name!r} changed while leaving", hint="run it again")
    return present + [op.key for op in revoke if isinstance(op, Delete)]


def list_hosts(store: Store) -> list[model.HostInfo]:
    data = view(store)
    data.update({e.key: e for e in store.list(model.HOSTS)})
    return model.hosts(data)
