"""rex logs: a jail's syslog, as the host's collector filed it (docs/logs.md)."""

from __future__ import annotations

import re
import sys

import click

from rexcarcer.cli import complete
from rexcarcer.cli.context import Ctx, pass_ctx
from rexcarcer.errors import UsageError

_JAIL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")


@click.command()
@click.argument("name", shell_complete=complete.logged_jail_names)
@click.option("-n", "--lines", type=click.IntRange(min=0), help="Only the last N lines.")
@click.option("-f", "--follow", is_flag=True, help="Keep printing lines as they arrive.")
@pass_ctx
def logs(ctx: Ctx, name: str, lines: int | None, follow: bool) -> None:
    """Show the syslog of jail NAME, collected on the host.

    Each jail forwards its syslog to the host's collector (rsyslog, started by
    `rex host serve` or `rex host setup`), which keeps one file per jail under
    $REX_ROOT/log/jails/. A destroyed jail's log stays readable."""
    if not _JAIL.fullmatch(name):
        raise UsageError(f"{name!r} is not a jail name", hint="`rex ls` lists the jails")
    shown: list[str] = []
    sink = _out if follow else shown.append
    svc = ctx.service()
    try:
        svc.logs(name, lines=lines, follow=follow, sink=sink)
    except KeyboardInterrupt:
        sys.exit(0)
    finally:
        svc.close()
    ctx.emit(
        {"jail": name, "lines": [ln.rstrip("\n") for ln in shown]},
        lambda: click.echo("".join(shown), nl=False),
    )


def _out(line: str) -> None:
    click.echo(line, nl=False)
    sys.stdout.flush()


def register(group: click.Group) -> None:
    group.add_command(logs)
