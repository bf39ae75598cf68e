"""Secret verbs: rex secret set, ls, rm (docs/secrets.md).

A value is read from standard input only (never from the command line, where
ps(1) and the shell's history would show it) and never printed."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import click

from rexcarcer.cli.context import Ctx, pass_ctx

if TYPE_CHECKING:
    from rexcarcer.secret.source import SecretAdmin

# a little over the largest value accepted, so that a larger one is refused, not cut
READ_LIMIT = (64 << 10) + 1


@contextmanager
def _admin(ctx: Ctx) -> Iterator[SecretAdmin]:
    from rexcarcer.secret.source import SecretAdmin
    from rexcarcer.wiring import open_store

    store = open_store(ctx.config)
    try:
        yield SecretAdmin(ctx.config, store)
    finally:
        store.close()


def _read_value() -> bytes:
    if sys.stdin.isatty():
        import getpass

        return getpass.getpass("value (not echoed): ").encode()
    return sys.stdin.buffer.read(READ_LIMIT)


@click.group()
def secret() -> None:
    """Secrets for SECRET lines: set on the host, never in the state store.

    \b
    printf %s 'the value' | rex secret set db_password
    A jail whose .rex file says `SECRET db_password` reads it from
    /run/secrets/db_password (mode 0400, on a memory file system), put there
    before its /etc/rc runs. A new value takes effect at the jail's next start
    or update. One host keeps its secrets in $REX_ROOT/secrets (0600 files in a
    0700 directory); a cluster keeps them in etcd, sealed to each host's key."""


@secret.command(name="set")
@click.argument("name")
@pass_ctx
def set_(ctx: Ctx, name: str) -> None:
    """Set secret NAME to the bytes on standard input (as they are: a trailing
    newline is part of the value; use printf %s). On a terminal the value is
    asked for without echo."""
    from rexcarcer.names import check_secret_name

    check_secret_name(name)
    value = _read_value()
    with _admin(ctx) as admin:
        sealed, left_out = admin.set(name, value)

    def text() -> None:
        where = f" for hosts {', '.join(sealed)}" if sealed else ""
        click.echo(f"secret {name} set{where} ({len(value)} bytes)")
        if left_out:
            click.echo(f"not sealed for {', '.join(left_out)}: no key published yet (start "
                       "their agents, then set it again)", err=True)  # fmt: skip

    ctx.emit({"name": name, "size": len(value), "hosts": sealed, "left_out": left_out}, text)


@secret.command(name="ls")
@pass_ctx
def ls_(ctx: Ctx) -> None:
    """List secrets: name, size, when set (and, in a cluster, the hosts sealed for)."""
    from rexcarcer.cli.output import table

    with _admin(ctx) as admin:
        infos = admin.list()
    rows = [[i.name, str(i.size), time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(i.updated)),
             ",".join(i.hosts) or "-"] for i in infos]  # fmt: skip
    headers = ["name", "size", "updated", "hosts"]
    ctx.emit([i.as_json() for i in infos], lambda: click.echo(table(headers, rows)))


@secret.command(name="rm")
@click.argument("name")
@pass_ctx
def rm(ctx: Ctx, name: str) -> None:
    """Remove secret NAME (refused while a jail's .rex file names it)."""
    with _admin(ctx) as admin:
        admin.remove(name)
    ctx.emit({"name": name, "removed": True}, lambda: click.echo(f"secret {name} removed"))


def register(group: click.Group) -> None:
    group.add_command(secret)
