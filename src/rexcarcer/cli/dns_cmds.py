"""DNS verbs: rex dns ls, rex dns check."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

import click

from rexcarcer.cli.context import Ctx, pass_ctx

if TYPE_CHECKING:
    from rexcarcer.dns.publish import CheckReport
    from rexcarcer.engine.base import Engine
    from rexcarcer.model.jail import JailRecord


@click.group()
def dns() -> None:
    """Cluster DNS: the records rex publishes in unbound (docs/dns.md)."""


@dns.command(name="ls")
@pass_ctx
def ls_(ctx: Ctx) -> None:
    """List the records rex publishes: jail, name, TTL, type, data."""
    from rexcarcer.cli.output import table
    from rexcarcer.dns.hook import dns_enabled, publisher_for

    host = ctx.host()
    try:
        published = publisher_for(host).published()
    finally:
        host.close()
    rows = [(jail, r) for jail, recs in sorted(published.items()) for r in recs]
    data = [{"jail": jail, **r.as_json()} for jail, r in rows]

    def text() -> None:
        if not dns_enabled(ctx.config):
            click.echo(f"note: DNS is off (REX_DNS={ctx.config.dns}, no unbound on "
                       f"{ctx.config.unbound_control}); see `rex doctor`", err=True)  # fmt: skip
        cells = [[j, r.name, str(r.ttl), r.rtype, r.data] for j, r in rows]
        click.echo(table(["jail", "name", "ttl", "type", "data"], cells))

    ctx.emit(data, text)


def _running(eng: Engine) -> dict[str, JailRecord]:
    from rexcarcer.engine import jails

    out = {}
    for info in jails.list_jails(eng):
        rec = jails.record(eng, info.name)
        if info.state == "running" and rec is not None:
            out[info.name] = rec
    return out


@dns.command()
@click.option("--dry-run", is_flag=True, help="Report drift only; exit 1 when there is some.")
@pass_ctx
def check(ctx: Ctx, dry_run: bool) -> None:
    """Compare running jails, the published records and what unbound serves; repair.

    Repairs a reload or restart of unbound that lost its run-time records, records
    changed behind rex's back, and jails started while DNS was off."""
    from rexcarcer.dns.hook import publisher_for

    eng = ctx.engine()
    try:
        report = publisher_for(eng.host).check(_running(eng), repair=not dry_run)
    finally:
        eng.close()
    ctx.emit(report.as_json(), lambda: _print_report(report))
    if dry_run and not report.clean:
        sys.exit(1)


def _print_report(report: CheckReport) -> None:
    done = "repaired" if report.repaired else "found"
    if report.sentinel_missing:
        click.echo(f"unbound lost its run-time records (reload or restart): {done}")
    for name in report.published:
        click.echo(f"jail {name} runs but was not published: {done}")
    for name in report.withdrawn:
        click.echo(f"jail {name} is published but not running: {done}")
    for r in report.drift.missing:
        click.echo(f"missing in unbound: {r.line()}")
    for r in report.drift.unexpected:
        click.echo(f"unexpected in unbound: {r.line()}")
    if report.clean:
        click.echo("in sync: unbound serves exactly what rex publishes")
    elif report.repaired:
        click.echo("repaired: unbound now serves exactly what rex publishes")


def register(group: click.Group) -> None:
    group.add_command(dns)
