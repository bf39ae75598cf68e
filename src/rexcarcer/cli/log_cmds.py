"""rex logs: a jail's syslog, as the host's collector filed it (docs/logs.md)."""

from __future__ import annotations

import re
import sys

import click

from rexcarcer.cli import complete
from rexcarcer.cli.main import Ctx, pass_ctx
from rexcarcer.errors import NotFound, UsageError

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
    from rexcarcer.logs import LogsError, reader, service

    if not _JAIL.fullmatch(name):
        raise UsageError(f"{name!r} is not a jail name", hint="`rex ls` lists the jails")
    paths = service.paths_for(ctx.config)
    path = paths.jail_log(name)
    if not path.exists():
        _missing(ctx, name)
        if not follow:
            ctx.emit({"jail": name, "lines": []}, lambda: None)
            return
    try:
        shown, offset = reader.tail(path, lines) if path.exists() else ([], 0)
    except OSError as exc:
        raise LogsError(f"cannot read {path}: {exc}") from exc
    if not follow:
        ctx.emit(
            {"jail": name, "lines": [ln.rstrip("\n") for ln in shown]},
            lambda: click.echo("".join(shown), nl=False),
        )
        return
    for line in shown:
        _out(line)
    try:
        reader.follow(path, offset, _out)
    except KeyboardInterrupt:
        sys.exit(0)


def _out(line: str) -> None:
    click.echo(line, nl=False)
    sys.stdout.flush()


def _missing(ctx: Ctx, name: str) -> None:
    """No file yet: an unknown jail is an error; a known one may simply be quiet."""
    from rexcarcer.engine import jails
    from rexcarcer.logs import service

    host = ctx.host()
    try:
        known = jails.record(host, name) is not None
    finally:
        host.close()
    if not known:
        raise NotFound(f"no jail named {name!r} and no log for it", hint="`rex ls` lists the jails")
    if service.collector_pid(service.paths_for(ctx.config)) is None:
        from rexcarcer.logs import LogsError

        raise LogsError(
            f"no log for {name} yet, and the log collector is not running",
            hint="start it with `rex host serve` (or `rex host setup`); see `rex doctor`",
        )


def register(group: click.Group) -> None:
    group.add_command(logs)
