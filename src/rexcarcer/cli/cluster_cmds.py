"""Cluster verbs: rex cluster init / join / leave, rex hosts, rex agent."""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import TYPE_CHECKING

import click

from rexcarcer.cli.context import Ctx, pass_ctx

if TYPE_CHECKING:
    from rexcarcer.state.etcd import EtcdStore


def _endpoints(ctx: Ctx, etcd: str | None) -> list[str]:
    from rexcarcer.errors import UsageError

    urls = [u.strip() for u in (etcd or "").split(",") if u.strip()] or list(ctx.config.etcd)
    if not urls:
        raise UsageError(
            "no etcd endpoints", hint="pass --etcd http://HOST:2379,... or set REX_ETCD"
        )
    return urls


def _store(ctx: Ctx, urls: list[str]) -> EtcdStore:
    from rexcarcer.cluster.store import open_etcd

    return open_etcd(ctx.config, urls)


def _config_path(ctx: Ctx) -> Path:
    return ctx.config_file or ctx.config.root / "rexcarcer.toml"


@click.group()
def cluster() -> None:
    """Form a cluster of hosts on etcd (docs/cluster.md)."""


@cluster.command()
@click.option("--etcd", help="etcd client URLs, comma-separated (default: REX_ETCD).")
@click.option(
    "--cidr",
    default="203.0.113.0/24",
    show_default=True,
    help="The range every host's jail subnet is cut from.",
)
@click.option("--zone", default=None, help="DNS zone (default: REX_ZONE, rex.internal).")
@click.option(
    "--host-prefix",
    type=int,
    default=27,
    show_default=True,
    help="Prefix length of each host's jail subnet.",
)
@click.option(
    "--share-ca/--no-share-ca",
    default=True,
    show_default=True,
    help="Store this host's cluster CA (created if missing) in etcd for joining hosts.",
)
@pass_ctx
def init(
    ctx: Ctx, etcd: str | None, cidr: str, zone: str | None, host_prefix: int, share_ca: bool
) -> None:
    """Store the cluster's settings and CA in etcd (once; again with the same ones is fine).

    The CA is this host's (`rex ca init`, or a new ECDSA P-256 root made now),
    key included: protect etcd accordingly (docs/cluster.md), or pass
    --no-share-ca and copy $REX_ROOT/ca to every host yourself."""
    from rexcarcer.cluster.membership import init as do_init
    from rexcarcer.cluster.model import make_settings

    wanted = make_settings(cidr, zone or ctx.config.zone, host_prefix)
    store = _store(ctx, _endpoints(ctx, etcd))
    try:
        conf, created = do_init(store, wanted)
        ca_fp = _share_ca(ctx, store) if share_ca else None
    finally:
        store.close()
    data = {**conf.as_json(), "created": created, "ca_fingerprint": ca_fp}
    verb = "created" if created else "already set up"
    shared = f"; CA sha256:{ca_fp} shared" if ca_fp else ""
    ctx.emit(
        data,
        lambda: click.echo(
            f"cluster {verb}: CIDR {conf.cidr}, host subnets /{conf.host_prefix}, "
            f"zone {conf.zone}{shared}"
        ),
    )


def _share_ca(ctx: Ctx, store: EtcdStore) -> str:
    """This host's CA into etcd: the one the cluster has, else ours (made if missing)."""
    from rexcarcer.cluster import cashare
    from rexcarcer.pki import ca
    from rexcarcer.pki.layout import CaPaths

    host = ctx.host()
    try:
        paths = CaPaths.under(host.config.root)
        with host.lock("ca"):
            fingerprint, _ = cashare.install(store, paths)  # the cluster has one already
            if fingerprint is not None:
                return fingerprint
            if not paths.exists():
                now = ca.utcnow()
                ca.install(paths, ca.self_signed(ca.CaSettings(), now), now=now)
            return cashare.publish(store, paths)[0]
    finally:
        host.close()


@cluster.command()
@click.option("--etcd", help="etcd client URLs, comma-separated (default: REX_ETCD).")
@click.option("--host-name", help="This host's name (default: REX_HOST, then the machine's).")
@click.option(
    "--address",
    help="The address other hosts reach this one on (default: the source address towards etcd).",
)
@pass_ctx
def join(ctx: Ctx, etcd: str | None, host_name: str | None, address: str | None) -> None:
    """Register this host, claim its jail subnet, write its configuration."""
    from rexcarcer.cluster import hostconf
    from rexcarcer.cluster.membership import join as do_join
    from rexcarcer.cluster.membership import local_address

    urls = _endpoints(ctx, etcd)
    name = host_name or ctx.config.host
    store = _store(ctx, urls)
    try:
        _install_ca(ctx, store, check_only=True)  # a conflicting CA: refused before joining
        joined = do_join(store, store, name, address or local_address(urls[0]))
        ca_fp, ca_written = _install_ca(ctx, store)
    finally:
        store.close()
    path = _config_path(ctx)
    hostconf.update(
        path,
        {
            "etcd": urls,
            "host": joined.name,
            "subnet": str(joined.subnet),
            "zone": joined.settings.zone,
            "cluster_cidr": str(joined.settings.cidr),
            # the TLS files this join used, so that the agent and rex use them too
            **_tls_settings(ctx),
        },
    )
    if ca_fp is None:
        ca_line = "the cluster keeps its CA off etcd: copy $REX_ROOT/ca from its first host"
    else:
        ca_line = f"cluster CA sha256:{ca_fp} " + ("installed" if ca_written else "already here")
    ctx.emit(
        {
            **joined.as_json(),
            "config": str(path),
            "ca_fingerprint": ca_fp,
            "ca_installed": ca_written,
        },
        lambda: click.echo(
            f"joined as {joined.name} ({joined.address}); jail subnet {joined.subnet}; "
            f"wrote {path}\n{ca_line}\n"
            "next: run `rex agent` (contrib/ has a systemd unit and an rc.d script)"
        ),
    )


def _tls_settings(ctx: Ctx) -> dict[str, str]:
    files = {"etcd_ca": ctx.config.etcd_ca, "etcd_cert": ctx.config.etcd_cert,
             "etcd_key": ctx.config.etcd_key}  # fmt: skip
    return {k: str(v) for k, v in files.items() if v is not None}


def _install_ca(ctx: Ctx, store: EtcdStore, *, check_only: bool = False) -> tuple[str | None, bool]:
    from rexcarcer.cluster import cashare
    from rexcarcer.pki.layout import CaPaths

    host = ctx.host()
    try:
        paths = CaPaths.under(host.config.root)
        with host.lock("ca"):
            if check_only:
                cashare.check(store, paths)
                return None, False
            return cashare.install(store, paths)
    finally:
        host.close()


@cluster.command()
@click.option("--force", is_flag=True, help="Leave even if jails of this host remain.")
@pass_ctx
def leave(ctx: Ctx, force: bool) -> None:
    """Release this host's subnet and registration; remove etcd from its configuration."""
    from rexcarcer.cluster import hostconf
    from rexcarcer.cluster.membership import leave as do_leave

    store = _store(ctx, _endpoints(ctx, None))
    try:
        removed = do_leave(store, ctx.config.host, force=force)
    finally:
        store.close()
    path = _config_path(ctx)
    hostconf.update(path, {"etcd": None, "subnet": None, "cluster_cidr": None})
    ctx.emit(
        {"host": ctx.config.host, "removed": removed},
        lambda: click.echo(f"{ctx.config.host} left the cluster ({len(removed)} keys)"),
    )


@click.command()
@pass_ctx
def hosts(ctx: Ctx) -> None:
    """The cluster's hosts: liveness, address, jail subnet, jail count."""
    from rexcarcer.cli.output import table
    from rexcarcer.cluster.membership import list_hosts

    store = _store(ctx, _endpoints(ctx, None))
    try:
        found = list_hosts(store)
    finally:
        store.close()
    from rexcarcer.cli.complete import remember_hosts

    remember_hosts(ctx.config.root, [h.name for h in found])  # for shell completion
    rows = [
        [h.name, "alive" if h.alive else "DOWN", h.address, h.subnet, str(h.jails)] for h in found
    ]
    ctx.emit(
        [h.as_json() for h in found],
        lambda: click.echo(table(["host", "state", "address", "subnet", "jails"], rows)),
    )


@click.command()
@click.option(
    "--lease-ttl",
    type=int,
    default=10,
    show_default=True,
    help="Seconds without this agent before the host counts as dead.",
)
@click.option(
    "--idle",
    type=float,
    default=5.0,
    show_default=True,
    help="Seconds between periodic checks (unbound reloads, routes, jails, SkyDNS).",
)
@click.option("--no-routes", is_flag=True, help="Do not install routes to other hosts' jails.")
@click.option(
    "--api-port",
    type=int,
    default=7443,
    show_default=True,
    help="Port of the mutual-TLS API (on the host's cluster address).",
)
@click.option("--no-api", is_flag=True, help="Serve no API: jails cannot be placed here.")
@click.option(
    "--no-jails",
    is_flag=True,
    help="Do not start, stop, restart or health-check this host's jails.",
)
@click.option(
    "--skydns",
    is_flag=True,
    help="Mirror the cluster's records under /skydns/ in etcd for CoreDNS's etcd plugin.",
)
@pass_ctx
def agent(
    ctx: Ctx,
    lease_ttl: int,
    idle: float,
    no_routes: bool,
    api_port: int,
    no_api: bool,
    no_jails: bool,
    skydns: bool,
) -> None:
    """The per-host daemon (foreground): the boot path and supervisor of the jails.

    On every host: the UNIX socket through which this host's `rex` commands run
    in the agent (REX_AGENT_SOCKET); this host's jails kept in their desired
    state: started at boot in DEPENDS order, started again after they stopped on
    their own as their RESTART policy says, stopped when `rex stop` wants them
    stopped; their HEALTHCHECKs, with unhealthy jails out of their services' DNS
    records. In a cluster also: the lease, DNS of the whole cluster, routes, and
    the mutual-TLS API through which `rex up` and `rex start/stop/destroy` on
    other hosts reach this one. `rex host setup` installs and enables it."""
    from rexcarcer.agent.daemon import Options, run

    logging.getLogger("rexcarcer").setLevel(logging.INFO)
    options = Options(lease_ttl=lease_ttl, idle=idle, routes=not no_routes,
                      api_port=None if no_api else api_port, jails=not no_jails,
                      skydns=skydns)  # fmt: skip
    stop = threading.Event()
    try:
        run(ctx.config, options, stop)
    finally:
        stop.set()


def register(cli: click.Group) -> None:
    cli.add_command(cluster)
    cli.add_command(hosts)
    cli.add_command(agent)
