"""Base verbs: rex base import / ls / rm."""

from __future__ import annotations

from pathlib import Path

import click

from rexcarcer.cli.main import Ctx, pass_ctx


@click.group()
def base() -> None:
    """Manage bases: the read-only snapshots jails are cloned from."""


@base.command(name="import")
@click.argument("path", type=click.Path(path_type=Path))
@click.argument("name")
@click.option(
    "--version", "version", help="Snapshot name (default: freebsd-version or a timestamp)."
)
@pass_ctx
def import_(ctx: Ctx, path: Path, name: str, version: str | None) -> None:
    """Make base NAME from a directory or a tarball at PATH."""
    from rexcarcer.engine.bases import check_base_name, import_base

    check_base_name(name)
    if version is not None:
        check_base_name(version)
    host = ctx.host()
    try:
        info = import_base(host, path, name, version=version)
    finally:
        host.close()
    ctx.emit({"name": info.name, "version": info.version, "snapshot": info.snapshot},
             lambda: click.echo(f"{host.config.dataset}/{info.snapshot}"))  # fmt: skip


@base.command(name="ls")
@pass_ctx
def ls_(ctx: Ctx) -> None:
    """List bases with their version, origin and the jails using them."""
    from rexcarcer.cli.output import table
    from rexcarcer.engine.bases import list_bases
    from rexcarcer.engine.jails import base_users

    host = ctx.host()
    try:
        bases = list_bases(host)
        users = {b.name: base_users(host, b.name) for b in bases}
    finally:
        host.close()
    data = [{"name": b.name, "version": b.version, "origin": b.props.get("origin", ""),
             "jails": users[b.name]} for b in bases]  # fmt: skip
    rows = [[b.name, b.version, b.props.get("origin", ""), ",".join(users[b.name]) or "-"]
            for b in bases]  # fmt: skip
    ctx.emit(data, lambda: click.echo(table(["name", "version", "origin", "jails"], rows)))


@base.command(name="rm")
@click.argument("name")
@pass_ctx
def rm(ctx: Ctx, name: str) -> None:
    """Remove base NAME and its cached images; refused while jails use it."""
    from rexcarcer.engine.bases import remove_base
    from rexcarcer.engine.jails import base_users

    host = ctx.host()
    try:
        remove_base(host, name, base_users(host, name))
    finally:
        host.close()


def register(group: click.Group) -> None:
    group.add_command(base)
