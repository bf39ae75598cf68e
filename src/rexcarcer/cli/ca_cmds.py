"""CA verbs: rex ca init, show, renew, crl (docs/identity.md)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from rexcarcer.cli import complete
from rexcarcer.cli.context import Ctx, pass_ctx
from rexcarcer.errors import UsageError

if TYPE_CHECKING:
    from rexcarcer.pki.ca import CaSettings

KEY_TYPES = ["ecdsa-p256", "ecdsa-p384", "rsa-3072"]
FILE = click.Path(path_type=Path, dir_okay=False)


@click.group()
def ca() -> None:
    """The cluster certificate authority: a TLS identity for every jail.

    \b
    Each jail gets /etc/ssl/rc/host.key (0600), host.crt (its certificate, then
    the CA chain) and cluster.crt (the root to trust), for its names
    (NAME.jail.ZONE, HOSTNAME, SERVICE.svc.ZONE) and addresses. Without a CA,
    the first `rex up` makes one with the defaults of `rex ca init`."""


@ca.command()
@click.option("--name", help="The CA's common name (default: RexCarcer CA).")
@click.option("--days", type=int, help="The CA's validity in days (default 3650).")
@click.option("--key-type", type=click.Choice(KEY_TYPES), help="The CA key (default ecdsa-p256).")
@click.option(
    "--jail-days",
    type=int,
    default=90,
    show_default=True,
    help="Validity of jail certificates; renewed in their last third.",
)
@click.option(
    "--intermediate",
    type=FILE,
    help="Issue under your intermediate CA: its certificate (PEM), optionally "
    "followed by its issuers up to your root.",
)
@click.option("--key", "key_file", type=FILE, help="The intermediate's private key.")
@click.option("--chain", type=FILE, help="The intermediate's issuers up to the root (PEM).")
@click.option("--force", is_flag=True, help="Replace an existing CA (the old one is kept aside).")
@click.option(
    "--public-range",
    "public_range",
    multiple=True,
    help="On a single host: a range outside REX_SUBNET its jails may have addresses in "
    "(repeatable). In a cluster use `rex cluster join --public-range`.",
)
@pass_ctx
def init(
    ctx: Ctx,
    name: str | None,
    days: int | None,
    key_type: str | None,
    jail_days: int,
    intermediate: Path | None,
    key_file: Path | None,
    chain: Path | None,
    force: bool,
    public_range: tuple[str, ...],
) -> None:
    """Create the cluster CA, or adopt a user-supplied intermediate CA.

    \b
    rex ca init                          a new ECDSA P-256 root, key 0600 in the state dir
    rex ca init --name "Acme jails CA" --days 1825 --jail-days 30
    rex ca init --intermediate int.pem --key int.key [--chain root.pem]

    It signs host certificates and one jail CA per host, which signs the jails'
    certificates (docs/identity.md)."""
    from rexcarcer.pki import ca as ca_mod
    from rexcarcer.pki.layout import CaPaths, JailCaPaths

    if intermediate is None and (key_file is not None or chain is not None):
        raise UsageError(
            "--key and --chain go with --intermediate",
            hint="rex ca init --intermediate CERT --key KEY",
        )
    explicit = (name, days, key_type)
    if intermediate is not None and (key_file is None or explicit != (None, None, None)):
        raise UsageError(
            "--intermediate needs --key, and takes its name, validity and key from the certificate",
            hint="rex ca init --intermediate CERT --key KEY [--chain FILE]",
        )
    config = ctx.config
    member = config.etcd and JailCaPaths.under(config.root).exists()
    if member and not CaPaths.under(config.root).exists():
        raise UsageError(
            "this host is a member of a cluster whose CA is kept on its CA host",
            hint="a cluster has one CA: run `rex ca init --force` on the CA host, then "
            "join every host again with a token",
        )
    host = ctx.host()
    try:
        paths = CaPaths.under(host.config.root)
        now = ca_mod.utcnow()
        with host.lock("ca"):
            if intermediate is not None and key_file is not None:
                new = ca_mod.intermediate(intermediate, key_file, chain, jail_days, now)
            else:
                new = ca_mod.self_signed(_settings(name, days, key_type, jail_days), now)
            kept = ca_mod.install(paths, new, now=now, force=force, public_ranges=public_range)
        info = ca_mod.describe(paths, new)
    finally:
        host.close()
    if kept is not None:
        info["replaced_kept_in"] = str(kept)
    ctx.emit(info, lambda: _print_ca(info))


def _settings(
    name: str | None, days: int | None, key_type: str | None, jail_days: int
) -> CaSettings:
    from rexcarcer.pki import ca as ca_mod
    from rexcarcer.pki.keys import KeyType

    return ca_mod.CaSettings(
        name=ca_mod.DEFAULT_NAME if name is None else name,
        days=ca_mod.DEFAULT_DAYS if days is None else days,
        key_type=KeyType(key_type or KeyType.ECDSA_P256),
        leaf_days=jail_days,
    )


def _print_ca(info: dict[str, Any]) -> None:
    rows = [
        ("subject", info["subject"]), ("issuer", info["issuer"]), ("mode", info["mode"]),
        ("key", info["key"]), ("fingerprint", f"sha256:{info['fingerprint_sha256']}"),
        ("valid", f"{info['not_before']} to {info['not_after']}"),
        ("jail certificates", f"{info['jail_certificate_days']} days"),
        ("trust anchor", ", ".join(t["subject"] for t in info["trust_anchor"])),
        ("directory", info["directory"]),
    ]  # fmt: skip
    if info.get("replaced_kept_in"):
        rows.append(("previous CA kept in", info["replaced_kept_in"]))
    if info.get("jail_ca"):
        j = info["jail_ca"]
        rows.append(("this host's jail CA", f"{j['subject']}, until {j['not_after']}"))
        rows.append(("jail addresses", ", ".join(j["permitted"]) or "any"))
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        click.echo(f"{key + ':':{width + 1}} {value}")


@ca.command()
@click.argument("jail", required=False, shell_complete=complete.jail_names)
@pass_ctx
def show(ctx: Ctx, jail: str | None) -> None:
    """Show the cluster CA and this host's jail CA, or JAIL's certificate."""
    from rexcarcer.pki import ca as ca_mod
    from rexcarcer.pki import jailca, registry
    from rexcarcer.pki.layout import CaPaths, JailCaPaths

    paths, jpaths = CaPaths.under(ctx.config.root), JailCaPaths.under(ctx.config.root)
    if jail is None:
        if paths.exists() or not jpaths.exists():
            info = ca_mod.describe(paths, ca_mod.load(paths))
        else:  # a cluster member: the CA's key is on the CA host
            info = jailca.describe_cluster_ca(jpaths)
        if jpaths.exists():
            info["jail_ca"] = jailca.describe(jpaths)
        ctx.emit(info, lambda: _print_ca(info))
        return
    host = ctx.host()
    try:
        rec = registry.current(host.store, jail)
    finally:
        host.close()
    if rec is None:
        from rexcarcer.errors import NotFound

        raise NotFound(
            f"jail {jail!r} has no certificate",
            hint="`rex ls` lists the jails; one gets its certificate at start",
        )
    ctx.emit(rec, lambda: _print_cert(rec))


def _print_cert(rec: dict[str, Any]) -> None:
    import datetime as dt

    def when(t: int) -> str:
        return dt.datetime.fromtimestamp(t, dt.UTC).isoformat()

    ident = rec["identity"]
    click.echo(f"jail:        {rec['jail']}")
    click.echo(f"serial:      {rec['serial']}")
    click.echo(f"fingerprint: sha256:{rec['fingerprint']}")
    click.echo(f"names:       {', '.join(ident['names'] + ident['ips'])}")
    click.echo(f"valid:       {when(rec['not_before'])} to {when(rec['not_after'])}")
    click.echo(f"issuer:      sha256:{rec['issuer']}")


@ca.command()
@click.argument("names", nargs=-1, shell_complete=complete.jail_names)
@click.option("--due", is_flag=True, help="Renew every jail whose certificate is due.")
@pass_ctx
def renew(ctx: Ctx, names: tuple[str, ...], due: bool) -> None:
    """Issue new certificates to jails NAMES now (or only those due, with --due).

    The files in /etc/ssl/rc are replaced; a running service must reload them.
    `rex up`/`rex start` renew a certificate in the last third of its validity;
    run `rex ca renew --due` daily for jails that run for long."""
    from rexcarcer.engine import jails
    from rexcarcer.pki.hook import ensure_identity

    if bool(names) == due:
        raise UsageError("name jails to renew, or give --due", hint="rex ca renew web1")
    eng = ctx.engine()
    done: list[dict[str, str]] = []
    try:
        targets = names or tuple(i.name for i in jails.list_jails(eng) if i.state != "creating")
        for name in targets:
            rec = jails.record(eng, name)
            if rec is None:
                from rexcarcer.errors import NotFound

                raise NotFound(f"no jail named {name!r}", hint="`rex ls` lists the jails")
            why = ensure_identity(eng.host, rec, jails.spec_for(eng, rec), force=not due)
            if why is not None:
                done.append({"jail": name, "reason": why})
    finally:
        eng.close()

    def text() -> None:
        for d in done:
            click.echo(f"{d['jail']}: renewed ({d['reason']})")
        if not done:
            click.echo("nothing to renew")

    ctx.emit(done, text)


@ca.command()
@click.option(
    "--out",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Write the CRL to this file instead of standard output.",
)
@click.option(
    "--days",
    type=click.IntRange(1, 365),
    default=7,
    show_default=True,
    help="Until when the CRL is valid (nextUpdate).",
)
@click.option(
    "--root",
    "root_crl",
    is_flag=True,
    help="The cluster CA's own CRL (revoked host certificates and jail CAs); on the CA host.",
)
@pass_ctx
def crl(ctx: Ctx, out: Path | None, days: int, root_crl: bool) -> None:
    """Print this host's jail CRL (PEM), signed by its jail CA; -o json lists the entries.

    Certificates of destroyed jails are revoked (cessationOfOperation), and
    renewed ones superseded. The CRL is also kept in $REX_ROOT/jail-ca/crl.pem
    and published in the store (pki/crls/HOST). --root: the cluster CA's CRL
    ($REX_ROOT/ca/crl.pem, pki/root-crl)."""
    from rexcarcer.errors import NotFound
    from rexcarcer.pki import ca as ca_mod
    from rexcarcer.pki import jailca, registry
    from rexcarcer.pki.hook import issuer_id, refresh_crl
    from rexcarcer.pki.layout import CaPaths, JailCaPaths

    host = ctx.host()
    try:
        now = ca_mod.utcnow()
        if root_crl:
            from rexcarcer.cluster.signer import publish_root_crl

            paths = CaPaths.under(host.config.root)
            issuer = ca_mod.load(paths).fingerprint
            data = publish_root_crl(host.store, paths, now, days)
        else:
            jpaths = JailCaPaths.under(host.config.root)
            if not jpaths.exists():
                raise NotFound(
                    "this host has no jail CA yet",
                    hint="it is made with the first jail (in a cluster: by `rex cluster join`)",
                )
            authority = jailca.load(jpaths)
            issuer = issuer_id(authority)
            data = refresh_crl(host, authority, now, days)
        entries = registry.revoked(host.store, issuer, now.timestamp())
    finally:
        host.close()
    if out is not None:
        try:
            out.write_bytes(data)
        except OSError as exc:
            raise UsageError(f"cannot write {out}: {exc}") from exc

    def text() -> None:
        if out is None:
            click.echo(data.decode(), nl=False)

    ctx.emit([e.as_json() for e in entries], text)


def register(group: click.Group) -> None:
    group.add_command(ca)
