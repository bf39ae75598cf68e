"""Trust verbs: rex trust add / ls / rm (the signers whose bases rex accepts)."""

from __future__ import annotations

from pathlib import Path

import click

from rexcarcer.cli.context import Ctx, pass_ctx


@click.group()
def trust() -> None:
    """Manage the signer certificates whose signatures make a base acceptable."""


@trust.command()
@click.argument("cert", type=click.Path(path_type=Path, dir_okay=False))
@pass_ctx
def add(ctx: Ctx, cert: Path) -> None:
    """Trust the signer whose X.509 certificate (PEM or DER) is CERT.

    Check its fingerprint with the publisher first (`openssl x509 -noout
    -fingerprint -sha256 -in CERT`). An expired or not-yet-valid certificate is
    refused."""
    from rexcarcer.base.sign import now
    from rexcarcer.base.trust import TrustStore, trust_dir

    info = TrustStore(trust_dir(ctx.config.root)).add(cert, now())
    ctx.emit(info.as_json(now()),
             lambda: click.echo(f"trusted {info.subject}: {info.fingerprint}"))  # fmt: skip


@trust.command(name="ls")
@pass_ctx
def ls_(ctx: Ctx) -> None:
    """List the trusted signers: fingerprint, subject, key, validity."""
    from rexcarcer.base.sign import now
    from rexcarcer.base.trust import TrustStore, trust_dir
    from rexcarcer.cli.output import table

    when = now()
    certs = [c.as_json(when) for c in TrustStore(trust_dir(ctx.config.root)).list()]
    rows = [[c["fingerprint"], c["subject"], c["key"], c["not_after"], c["status"]] for c in certs]
    headers = ["fingerprint", "subject", "key", "not after", "status"]
    ctx.emit(certs, lambda: click.echo(table(headers, rows)))


@trust.command()
@click.argument("fingerprint")
@pass_ctx
def rm(ctx: Ctx, fingerprint: str) -> None:
    """Stop trusting the signer with FINGERPRINT (or a unique prefix of 8+ hex digits).

    Bases already received stay; new fetches no longer count its signatures."""
    from rexcarcer.base.trust import TrustStore, trust_dir

    info = TrustStore(trust_dir(ctx.config.root)).remove(fingerprint)
    click.echo(f"removed {info.subject}: {info.fingerprint}", err=True)


def register(group: click.Group) -> None:
    group.add_command(trust)
