"""Optional mirror of the cluster's DNS records in the SkyDNS layout under
``/skydns/``, so that CoreDNS's ``etcd`` plugin can serve the zone
(``rex agent --skydns``; notes/dns-and-etcd.md section 2).

A name's labels, reversed, are the key's path; one leaf per jail below it (the
plugin returns every leaf under the queried name)::

    web1.jail.rex.internal. A
        /skydns/internal/rex/jail/web1/web1         {"host": "203.0.113.12"}
    renderer.svc.rex.internal. A
        /skydns/internal/rex/svc/renderer/web1      {"host": "203.0.113.12"}
    _renderer._tcp.svc.rex.internal. SRV
        /skydns/internal/rex/svc/_tcp/_renderer/web1
                                  {"host": "web1.jail.rex.internal.", "port": 1234, ...}
    12.113.0.203.in-addr.arpa. PTR
        /skydns/arpa/in-addr/203/0/113/12/web1      {"host": "web1.jail.rex.internal."}

An AAAA record's leaf is ``<jail>/aaaa``. Every value carries ``"ttl"`` and
``"rexcarcer": <host>`` (unknown fields are ignored by the plugin): only keys
with that field are ever changed or deleted, so the tree can be shared.

The records are those every agent's unbound serves (jails of live hosts).
They are not put on leases (CoreDNS would make one RPC per leased record per
lookup): the cluster's leader, the live host with the lowest name, writes
the difference at every change and idle tick, and deletes a dead host's
records when its lease lapses.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from rexcarcer.cluster import model
from rexcarcer.cluster.model import View
from rexcarcer.dns.records import Record, RType
from rexcarcer.state.base import Delete, Op, Put, Store, dumps

log = logging.getLogger("rexcarcer.agent")

PREFIX = "/skydns/"
MARK = "rexcarcer"
BATCH = 100  # etcd refuses transactions of more than 128 operations by default


def path(name: str) -> str:
    """``web1.jail.rex.internal.`` -> ``internal/rex/jail/web1``."""
    return "/".join(reversed(name.rstrip(".").split(".")))


def value(rec: Record, host: str) -> dict[str, Any] | None:
    """The SkyDNS message for one record; None for types the layout does not carry."""
    if rec.rtype in (RType.A, RType.AAAA, RType.PTR):
        return {"host": rec.data, "ttl": rec.ttl, MARK: host}
    if rec.rtype == RType.SRV:
        priority, weight, port, target = rec.data.split(" ")
        return {"host": target, "port": int(port), "priority": int(priority),
                "weight": int(weight), "ttl": rec.ttl, MARK: host}  # fmt: skip
    return None


def entries(view: View) -> dict[str, str]:
    """Key (below ``/skydns/``) -> JSON value, for every record of a live host's jail."""
    alive = model.alive_hosts(view)
    out: dict[str, str] = {}
    for jail, published in model.published(view):
        host = published.get("host")
        if host not in alive:
            continue
        for key, msg in _messages(jail, str(host), published.get("records", [])):
            out[key] = dumps(msg)
    return out


def _messages(jail: str, host: str, records: Any) -> Iterator[tuple[str, dict[str, Any]]]:
    for data in records:
        try:
            rec = Record.from_json(data)
            msg = value(rec, host)
        except (KeyError, TypeError, ValueError):
            log.warning("SkyDNS: ignoring a malformed record of jail %s: %r", jail, data)
            continue
        if msg is not None:
            leaf = f"{jail}/aaaa" if rec.rtype == RType.AAAA else jail
            yield f"{path(rec.name)}/{leaf}", msg


def leader(view: View) -> str | None:
    alive = model.alive_hosts(view)
    return min(alive) if alive else None


def _ours(raw: str) -> bool:
    try:
        data = json.loads(raw)
    except ValueError:
        return False
    return isinstance(data, dict) and MARK in data


@dataclass
class SkyDnsMirror:
    store: Store  # keys relative to /skydns/ (EtcdStore(prefix=PREFIX))
    me: str

    def sync(self, view: View) -> tuple[int, int] | None:
        """Write the difference if this host leads; (put, deleted), or None."""
        if leader(view) != self.me:
            return None
        want = entries(view)
        have = {e.key: e.value for e in self.store.list("") if _ours(e.value)}
        ops: list[Op] = [Put(k, v) for k, v in sorted(want.items()) if have.get(k) != v]
        puts = len(ops)
        ops += [Delete(k) for k in sorted(set(have) - set(want))]
        for i in range(0, len(ops), BATCH):
            self.store.commit([], ops[i : i + BATCH])
        if ops:
            log.info("SkyDNS: %d keys written, %d deleted under %s", puts, len(ops) - puts, PREFIX)
        return puts, len(ops) - puts
