"""The cluster side of ``rex agent`` (agent/daemon.py runs it on a host that has
joined a cluster).

It keeps the host's lease (``hosts/<h>/alive``, refreshed at TTL/3,
re-registered when lost), watches everything under ``/rexcarcer/v1/`` and, on
every change and every ``idle`` seconds, makes the host match the cluster:

- DNS (dnssync.py): the local unbound serves every live host's records;
- routes (routes.py): the other hosts' jail subnets via their addresses;
- jails (jailsync.py): this host's jails started or stopped as their records
  want (after a reboot, after a jail's init died);
- with ``--skydns``, the records mirrored under ``/skydns/`` for CoreDNS
  (skydns.py; written by the live host with the lowest name);
- certificates (cluster/renewal.py): this host's certificate and jail CA are
  renewed before they expire, and its jail CRL re-signed daily;
- on the CA host (the one holding ``$REX_ROOT/ca``): join and renewal requests
  under ``join/`` are checked and signed, and the cluster CA's CRL is kept
  current (cluster/signer.py).
- the firewall's guard (netpolicy/), which follows the hosts and etcd endpoints.

With an API port it also serves the mutual-TLS API (agent/remote.py) on the host's
cluster address, through which ``rex up`` on another host places jails here,
and publishes its URL in the liveness key.

When etcd is unreachable it keeps serving what it last saw, retries, and on
reconnect resumes the watch (or reads everything again after a compaction).
It never revokes its lease on exit: a restarted agent finds its host still
alive, and a dead one disappears when the TTL runs out.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING

from rexcarcer.agent.jailsync import JailSync
from rexcarcer.cluster import model
from rexcarcer.cluster.dnssync import DnsSync
from rexcarcer.cluster.membership import alive_value
from rexcarcer.cluster.renewal import Renewal
from rexcarcer.cluster.routes import RouteSync
from rexcarcer.cluster.signer import Signer
from rexcarcer.cluster.skydns import SkyDnsMirror
from rexcarcer.engine.base import Engine
from rexcarcer.errors import RexError
from rexcarcer.host import Host
from rexcarcer.service.local import LocalService
from rexcarcer.state.base import Entry
from rexcarcer.state.lease import LeaseKeeper
from rexcarcer.state.records import jails_of
from rexcarcer.state.watch import Kind, Update, apply

if TYPE_CHECKING:
    from rexcarcer.agent.remote import ApiServer
    from rexcarcer.state.etcd import EtcdStore

log = logging.getLogger("rexcarcer.agent")


@dataclass
class Agent:
    name: str
    store: EtcdStore
    keeper: LeaseKeeper
    dns: DnsSync | None = None
    routes: RouteSync | None = None
    idle: float = 5.0
    api: ApiServer | None = None
    jails: JailSync | None = None
    skydns: SkyDnsMirror | None = None
    signer: Signer | None = None
    renewal: Renewal | None = None
    firewall: Callable[[], None] | None = None
    view: dict[str, Entry] = field(default_factory=dict)
    syncs: int = 0

    def run(self, stop: threading.Event) -> None:
        self.keeper.start()
        log.info(
            "agent %s: lease TTL %d s; watching %s", self.name, self.keeper.ttl, self.store.prefix
        )
        try:
            for update in self.store.watch("", idle=self.idle).updates(stop):
                self.handle(update)
        finally:
            if self.api is not None:
                self.api.close()
                self.api.api.store.close()
            if self.skydns is not None:
                self.skydns.store.close()
            self.keeper.stop()

    def handle(self, update: Update) -> None:
        before = dict(self.view) if update.restored else None
        changed = apply(self.view, update)
        if update.kind is Kind.RESET:
            log.info("agent: read %d keys at revision %d", len(self.view), update.revision)
        if before is not None:
            self.restored(before)
        if changed or update.kind is not Kind.CHANGES:  # idle: periodic repair
            self.reconcile()

    def restored(self, before: dict[str, Entry]) -> None:
        """etcd was restored from a snapshot: this host's jails put back or pruned
        (agent/restore.py); the watch brings what that changed into the view."""
        if self.jails is None:
            return
        from rexcarcer.agent import restore
        from rexcarcer.wiring import default_hooks

        eng = self.jails.engine
        eng.hooks = default_hooks(eng.host.config)  # DNS names go with a pruned record
        try:
            restore.republish(eng, self.store, before, self.view, self.name)
            restore.prune_all(eng, self.view, self.name)
        except RexError as exc:
            log.warning("restore: %s", exc)

    def reconcile(self) -> None:
        """Each part on its own: one failing (unbound down, a route refused) never
        keeps the others from running."""
        self.syncs += 1
        parts: list[tuple[str, Callable[[], object]]] = []
        if self.signer is not None:  # first: a joining host is waiting for it
            parts.append(("CA", partial(self.signer.sync, self.view)))
        if self.renewal is not None:
            parts.append(("certificates", partial(self.renewal.sync, self.view)))
        if self.dns is not None:
            parts.append(("DNS", partial(self.dns.sync, self.view)))
        if self.routes is not None:
            parts.append(("routes", partial(self.routes.sync, model.routes(self.view, self.name))))
        if self.jails is not None:
            sync_jails = self.jails.sync
            parts.append(("jails", lambda: sync_jails(jails_of(self.view.values()))))
        if self.skydns is not None:
            parts.append(("SkyDNS", partial(self.skydns.sync, self.view)))
        if self.firewall is not None:
            parts.append(("firewall", self.firewall))
        for label, sync in parts:
            try:
                sync()
            except RexError as exc:
                log.warning("%s: %s", label, exc)


def dns_sync_for(host: Host, cidr: model.Network) -> DnsSync | None:
    from rexcarcer.dns.hook import backend_for, dns_enabled
    from rexcarcer.dns.records import check_zone, reverse_zones

    if not dns_enabled(host.config):
        log.warning(
            "DNS: no unbound answers on %s: not programming DNS "
            "(run `rex host serve` or `rex host setup`)",
            host.config.unbound_control,
        )
        return None
    zone = check_zone(host.config.zone)
    return DnsSync(
        backend=backend_for(host.config),
        zone=zone,
        zones=(f"{zone}.", *reverse_zones(cidr)),
        data_file=host.platform.unbound_layout().data,
        lock=lambda: host.lock("dns"),
    )


def start_api(host: Host, local: LocalService, address: str, port: int) -> tuple[ApiServer, str]:
    """Issue this host's API credentials if needed and serve the API."""
    from rexcarcer.agent import remote
    from rexcarcer.cluster import tls
    from rexcarcer.cluster.store import open_etcd
    from rexcarcer.secret.publish import keep_sealing_key

    store = open_etcd(host.config)  # its own connection: requests run beside the watch
    # a new key seals this host's secrets again before it is published (secret/)
    files = keep_sealing_key(host.config, host.store,
                             lambda: tls.ensure(host.config, address, store=store))  # fmt: skip
    api = remote.Api(host.config, store, local)
    return remote.serve(api, files, address, port), remote.url_for(address, port)


def certificates(
    host: Host, store: EtcdStore, server: ApiServer | None
) -> tuple[Signer | None, Renewal]:
    """The CA host's signer (when this host holds the cluster CA) and the renewal."""
    from rexcarcer.pki.layout import CaPaths

    config = host.config
    paths = CaPaths.under(config.root)
    signer = Signer(store, paths, config.zone) if paths.exists() else None

    def reload() -> None:  # new handshakes get the renewed certificate
        if server is not None:
            from rexcarcer.cluster.tls import TlsFiles

            files = TlsFiles.under(config.root)
            server.reload_certificate(files.cert, files.key)

    def refresh_crl() -> None:
        from rexcarcer.pki import ca, jailca
        from rexcarcer.pki.hook import jail_ca_paths, refresh_crl

        refresh_crl(host, jailca.load(jail_ca_paths(host)), ca.utcnow())

    from rexcarcer.secret.publish import keep_sealing_key

    # a new key seals this host's secrets again before it is published (secret/)
    return signer, Renewal(store, config, reload, refresh_crl, lambda: host.lock("ca"),
                           rekey=partial(keep_sealing_key, config, store))  # fmt: skip


def build(
    engine: Engine,
    local: LocalService,
    store: EtcdStore,
    *,
    ttl: int,
    idle: float,
    routes: bool,
    api_port: int | None = None,
    jails: bool = True,
    skydns: bool = False,
) -> Agent:
    from rexcarcer.cluster.membership import settings

    host = engine.host
    name = host.config.host
    rec = store.get(model.host_key(name))
    if rec is None:
        from rexcarcer.cluster import ClusterError

        raise ClusterError(
            f"host {name!r} has not joined the cluster",
            hint="run `rex cluster join --etcd URLS` first",
        )
    conf = settings(store)
    server, url = None, None
    if api_port is not None:
        try:
            server, url = start_api(host, local, str(rec.json()["address"]), api_port)
        except RexError as exc:  # DNS and liveness matter more: run on without the API
            log.error("API not served: %s (%s)", exc, exc.hint or "")
    keeper = LeaseKeeper(store, ttl, {model.alive_key(name): alive_value(url)})
    route_sync = None
    if routes:
        # jail traffic between hosts passes through each host
        host.platform.enable_forwarding()
        route_sync = RouteSync(host.platform.routes)
    mirror = None
    if skydns:
        from rexcarcer.cluster import skydns as sky
        from rexcarcer.cluster.store import open_etcd

        mirror = SkyDnsMirror(open_etcd(host.config, prefix=sky.PREFIX), name)
    signer, renewal = certificates(host, store, server)
    return Agent(name, store, keeper, dns_sync_for(host, conf.cidr), route_sync, idle, server,
                 JailSync(engine, name, rewire=True) if jails else None, mirror, signer, renewal,
                 partial(engine.policy.guard, host))  # fmt: skip
