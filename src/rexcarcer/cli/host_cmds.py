"""Host verbs: rex doctor."""

from __future__ import annotations

import sys

import click

from rexcarcer.cli.main import Ctx, pass_ctx


@click.command()
@pass_ctx
def doctor(ctx: Ctx) -> None:
    """Check the host: configuration, ZFS, jail support, state store."""
    from rexcarcer.cli.output import table
    from rexcarcer.doctor import run_checks

    results = run_checks(ctx.config)
    rows = [[r.name, "ok" if r.ok else "FAIL", r.detail] for r in results]
    ctx.emit([{"check": r.name, "ok": r.ok, "detail": r.detail} for r in results],
             lambda: click.echo(table(["check", "status", "detail"], rows)))  # fmt: skip
    if not all(r.ok for r in results):
        sys.exit(1)


def register(group: click.Group) -> None:
    group.add_command(doctor)
