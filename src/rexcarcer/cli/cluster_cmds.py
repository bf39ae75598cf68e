"""Cluster verbs: rex cluster init / token / join / renew / leave, rex hosts, rex agent."""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import TYPE_CHECKING

import click

from rexcarcer.cli.context import Ctx, pass_ctx

if TYPE_CHECKING:
    import ipaddress

    from rexcarcer.cluster.tokens import Token
    from rexcarcer.state.etcd import EtcdStore

    Network = ipaddress.IPv4Network | ipaddress.IPv6Network


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


TTL_HELP = "How long the join token is good for: seconds, or with s, m, h, d (at most 7d)."
WAIT_HELP = "Seconds to wait for the CA host's agent to sign."
RANGE = click.option(
    "--public-range",
    "public_range",
    multiple=True,
    help="A range outside the jail subnet this host's jails may have addresses in "
    "(repeatable); their certificates may name only these and the subnet. Default: "
    "the ranges of the public_ips setting.",
)


def _declared(ctx: Ctx) -> list[Network] | None:
    """The public ranges this host declares for its jails (``public_ips``), or
    None: keep what the jail CA has."""
    return [r.network for r in ctx.config.public_ips] or None


def _ranges(values: tuple[str, ...]) -> list[Network]:
    import ipaddress

    from rexcarcer.errors import UsageError

    try:
        return [ipaddress.ip_network(v, strict=True) for v in values]
    except ValueError as exc:
        raise UsageError(
            f"bad --public-range: {exc}", hint="e.g. --public-range 192.0.2.0/28"
        ) from exc


def _expiry(token: Token) -> str:
    import datetime as dt

    return f"{dt.datetime.fromtimestamp(token.expires, dt.UTC):%Y-%m-%d %H:%M} UTC"


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
    default=False,
    show_default=True,
    help="Also store the CA's private key in etcd, so that every host signs for "
    "itself; only over https with a client certificate (REX_ETCD_CERT).",
)
@click.option("--token-ttl", default="1h", show_default=True, help=TTL_HELP)
@pass_ctx
def init(
    ctx: Ctx, etcd: str | None, cidr: str, zone: str | None, host_prefix: int, share_ca: bool,
    token_ttl: str,
) -> None:  # fmt: skip
    """Set up the cluster in etcd; this host keeps its CA and makes a join token.

    The cluster's settings and the CA's certificates go to etcd (again with the
    same settings is fine). The CA's key stays on this host (the CA host: its
    agent signs the other hosts' certificates) unless --share-ca. Prints a
    one-time join token for `rex cluster join --token` (`rex cluster token`
    makes more)."""
    from rexcarcer.cluster import onboard, tokens
    from rexcarcer.cluster.membership import init as do_init
    from rexcarcer.cluster.model import make_settings

    ttl = tokens.parse_duration(token_ttl)
    urls = _endpoints(ctx, etcd)
    if share_ca:  # before anything is written
        from rexcarcer.cluster.cashare import check_share

        check_share(urls, ctx.config.etcd_cert)
    wanted = make_settings(cidr, zone or ctx.config.zone, host_prefix)
    store = _store(ctx, urls)
    host = ctx.host()
    try:
        conf, created = do_init(store, wanted)
        state = onboard.init_ca(host, store, share=share_ca, endpoints=urls)
        token = onboard.make_token(host.config, store, ttl) if state.here else None
    finally:
        host.close()
        store.close()
    data = {**conf.as_json(), "created": created, **state.as_json(),
            "token": token.text if token else None,
            "token_expires": token.expires if token else None}  # fmt: skip

    def text() -> None:
        verb = "created" if created else "already set up"
        click.echo(f"cluster {verb}: CIDR {conf.cidr}, host subnets /{conf.host_prefix}, "
                   f"zone {conf.zone}")  # fmt: skip
        where = "this host" if state.here else f"host {state.ca_host}"
        shared = " (its key is also in etcd: --share-ca)" if state.shared else ""
        click.echo(f"cluster CA sha256:{state.fingerprint}, kept on {where}{shared}")
        if token is not None:
            click.echo(f"join token (one use, until {_expiry(token)}):\n  {token.text}\n"
                       f"on each other host: rex cluster join --etcd {','.join(urls)} "
                       "--token TOKEN (more tokens: `rex cluster token`)")  # fmt: skip

    ctx.emit(data, text)


@cluster.command()
@click.option("--ttl", default="1h", show_default=True, help=TTL_HELP)
@pass_ctx
def token(ctx: Ctx, ttl: str) -> None:
    """Make a one-time join token (on the CA host; kept hashed in etcd)."""
    from rexcarcer.cluster import onboard, tokens

    seconds = tokens.parse_duration(ttl)
    store = _store(ctx, _endpoints(ctx, None))
    try:
        made = onboard.make_token(ctx.config, store, seconds)
    finally:
        store.close()
    note = f"(one use, until {_expiry(made)}: rex cluster join --token TOKEN)"
    ctx.emit({"token": made.text, "expires": made.expires},
             lambda: click.echo(f"{made.text}\n{note}"))  # fmt: skip


@cluster.command()
@click.option("--etcd", help="etcd client URLs, comma-separated (default: REX_ETCD).")
@click.option("--host-name", help="This host's name (default: REX_HOST, then the machine's).")
@click.option(
    "--address",
    help="The address other hosts reach this one on (default: the source address towards etcd).",
)
@click.option("--token", "join_token", help="A join token from the CA host (`rex cluster token`).")
@click.option("--wait", type=click.FloatRange(1, 3600), default=120, show_default=True,
              help=WAIT_HELP)  # fmt: skip
@RANGE
@pass_ctx
def join(
    ctx: Ctx, etcd: str | None, host_name: str | None, address: str | None,
    join_token: str | None, wait: float, public_range: tuple[str, ...],
) -> None:  # fmt: skip
    """Register this host, claim its jail subnet, get its certificates, write its configuration.

    \b
    This host makes its keys; the CA host's agent signs its host certificate and
    its jail CA (the intermediate that signs its jails' certificates) for the
    token. On the CA host itself, or in a --share-ca cluster, they are signed here.
    Again on a host that has its certificates: no token needed."""
    from rexcarcer.cluster import hostconf, onboard
    from rexcarcer.cluster.membership import local_address

    urls = _endpoints(ctx, etcd)
    name = host_name or ctx.config.host
    # default: the ranges this host declares for its jails (public_ips)
    ranges = _ranges(public_range) if public_range else _declared(ctx)
    store = _store(ctx, urls)
    host = ctx.host()
    try:
        where = address or local_address(urls[0])
        done = onboard.join(host, store, store, name=name, address=where, token=join_token,
                            public=ranges, wait=wait, progress=host.progress)  # fmt: skip
    finally:
        host.close()
        store.close()
    joined = done.joined
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
    ctx.emit(
        {**done.as_json(), "config": str(path)},
        lambda: click.echo(
            f"joined as {joined.name} ({joined.address}); jail subnet {joined.subnet}; "
            f"wrote {path}\ncluster CA sha256:{done.ca}; certificates: {done.how}\n"
            "next: run `rex agent` (contrib/ has a systemd unit and an rc.d script)"
        ),
    )


def _tls_settings(ctx: Ctx) -> dict[str, str]:
    files = {"etcd_ca": ctx.config.etcd_ca, "etcd_cert": ctx.config.etcd_cert,
             "etcd_key": ctx.config.etcd_key}  # fmt: skip
    return {k: str(v) for k, v in files.items() if v is not None}


@cluster.command()
@click.option("--wait", type=click.FloatRange(1, 3600), default=120, show_default=True,
              help=WAIT_HELP)  # fmt: skip
@RANGE
@pass_ctx
def renew(ctx: Ctx, wait: float, public_range: tuple[str, ...]) -> None:
    """Renew this host's certificate and jail CA now (the agent does it before they expire).

    Signed by the CA host for a request made with the current certificate
    (no token); --public-range replaces the jail CA's public ranges."""
    from rexcarcer.cluster import onboard

    store = _store(ctx, _endpoints(ctx, None))
    host = ctx.host()
    try:
        ranges = _ranges(public_range) if public_range else _declared(ctx)
        how, done = onboard.renew(host, store, public=ranges, wait=wait, progress=host.progress)
    finally:
        host.close()
        store.close()
    data = {"host": ctx.config.host, "certificates": how, **(done.as_json() if done else {})}
    ctx.emit(data, lambda: click.echo(f"{ctx.config.host}: certificates renewed ({how})"))


@cluster.command()
@click.option("--force", is_flag=True, help="Leave even if jails of the host remain.")
@click.option(
    "--host",
    "other",
    help="Remove another host (dead, or not to be trusted any more) from here.",
)
@pass_ctx
def leave(ctx: Ctx, force: bool, other: str | None) -> None:
    """Release this host's subnet and registration, revoke its certificates; remove
    etcd from its configuration (with --host: another host's, from here)."""
    from rexcarcer.cluster import hostconf, onboard

    name = other or ctx.config.host
    store = _store(ctx, _endpoints(ctx, None))
    try:
        removed = onboard.leave(ctx.config, store, force=force, host=name)
    finally:
        store.close()
    if name == ctx.config.host:
        hostconf.update(_config_path(ctx), {"etcd": None, "subnet": None, "cluster_cidr": None})
    said = f"{name} left the cluster ({len(removed)} keys; its certificates are revoked)"
    ctx.emit({"host": name, "removed": removed}, lambda: click.echo(said))


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
    type=click.IntRange(1, 65535),
    default=None,
    help="Port of the mutual-TLS API (on the host's cluster address); "
    "default: the api_port setting (REX_API_PORT), 7443.",
)
@click.option("--no-api", is_flag=True, help="Serve no API: jails cannot be placed here.")
@click.option(
    "--no-jails", is_flag=True, help="Do not start or stop this host's jails to match the cluster."
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
    api_port: int | None,
    no_api: bool,
    no_jails: bool,
    skydns: bool,
) -> None:
    """The per-host daemon (foreground).

    On every host: the UNIX socket through which this host's `rex` commands run
    in the agent (REX_AGENT_SOCKET), and this host's jails kept in their desired
    state (started again after a reboot or a crash, unless stopped with `rex
    stop`). In a cluster also: the lease, DNS of the whole cluster, routes, and
    the mutual-TLS API through which `rex up` and `rex start/stop/destroy` on
    other hosts reach this one."""
    from rexcarcer.agent.daemon import Options, run

    logging.getLogger("rexcarcer").setLevel(logging.INFO)
    options = Options(lease_ttl=lease_ttl, idle=idle, routes=not no_routes,
                      api_port=None if no_api else (api_port or ctx.config.api_port),
                      jails=not no_jails,
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
