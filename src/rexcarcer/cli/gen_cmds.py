"""What outlives a generation of a jail: rex destroy (volumes kept or not),
rex rollback, rex history, rex volume ls/rm/snapshot."""

from __future__ import annotations

import time

import click

from rexcarcer.cli import complete
from rexcarcer.cli.context import Ctx, pass_ctx


@click.command()
@click.argument("names", nargs=-1, required=True, shell_complete=complete.jail_names)
@click.option("--volumes", is_flag=True, help="Destroy the jails' volumes too (their data).")
@pass_ctx
def destroy(ctx: Ctx, names: tuple[str, ...], volumes: bool) -> None:
    """Stop jails, release their addresses and destroy their datasets.

    Their volumes are kept (a later `rex up` of the same jail attaches them
    again) unless --volumes is given; what is kept is said on standard error."""
    svc = ctx.service()
    try:
        for name in names:
            kept = svc.destroy(name, volumes=volumes)
            if kept:
                refs = ", ".join(f"{name}.{v}" for v in kept)
                click.echo(f"kept the volumes of {name}: {refs} (`rex volume rm` removes them; "
                           f"`rex destroy --volumes` would have)", err=True)  # fmt: skip
    finally:
        svc.close()


@click.command()
@click.argument("name", shell_complete=complete.jail_names)
@click.option("--to", "to", type=click.IntRange(min=1), help="The generation (`rex history`).")
@pass_ctx
def rollback(ctx: Ctx, name: str, to: int | None) -> None:
    """Make an earlier generation of jail NAME current again.

    An update in place (`rex up` of a changed .rex file) keeps the generation it
    replaces; this starts that one (or generation --to) again with the jail's
    name, address, identity and volumes, and keeps the current one in its place."""
    svc = ctx.service()
    try:
        info = svc.rollback(name, to=to)
    finally:
        svc.close()
    ctx.emit(info.as_json(), lambda: click.echo(f"{info.name} is {info.state}"))


@click.command()
@click.argument("name", shell_complete=complete.jail_names)
@pass_ctx
def history(ctx: Ctx, name: str) -> None:
    """The generations of jail NAME: the current one and those kept for rollback."""
    from rexcarcer.cli.output import table

    svc = ctx.service()
    try:
        gens = svc.history(name)
    finally:
        svc.close()
    rows = [[str(g.generation), "current" if g.current else "kept",
             time.strftime("%Y-%m-%d %H:%M", time.localtime(g.created)), g.base, g.image]
            for g in gens]  # fmt: skip
    headers = ["gen", "state", "created", "base", "image"]
    ctx.emit([g.as_json() for g in gens], lambda: click.echo(table(headers, rows)))


@click.group()
def volume() -> None:
    """Volumes: the datasets a jail's VOLUME instructions mount (docs/rexfile.md)."""


@volume.command(name="ls")
@pass_ctx
def volume_ls(ctx: Ctx) -> None:
    """List volumes: jail, name, path in the jail, size limit, space used, snapshots."""
    from rexcarcer.cli.output import table
    from rexcarcer.rexfile.running import format_size

    svc = ctx.service()
    try:
        vols = svc.volumes()
    finally:
        svc.close()
    rows = [[f"{v.jail}.{v.name}", v.path, format_size(v.size) if v.size else "-",
             format_size(v.used), "attached" if v.attached else "kept", str(len(v.snapshots))]
            for v in vols]  # fmt: skip
    headers = ["volume", "path", "size", "used", "state", "snapshots"]
    ctx.emit([v.as_json() for v in vols], lambda: click.echo(table(headers, rows)))


@volume.command(name="rm")
@click.argument("refs", nargs=-1, required=True, shell_complete=complete.volume_refs)
@pass_ctx
def volume_rm(ctx: Ctx, refs: tuple[str, ...]) -> None:
    """Destroy volumes JAIL.VOLUME and their data (not one a jail mounts)."""
    from rexcarcer.engine.volumes import parse_ref

    svc = ctx.service()
    try:
        for ref in refs:
            svc.volume_rm(*parse_ref(ref))
    finally:
        svc.close()


@volume.command(name="snapshot")
@click.argument("ref", shell_complete=complete.volume_refs)
@click.option("--name", "label", help="Snapshot name (default: the date and time).")
@pass_ctx
def volume_snapshot(ctx: Ctx, ref: str, label: str | None) -> None:
    """Snapshot volume JAIL.VOLUME (also while the jail runs)."""
    from rexcarcer.engine.volumes import parse_ref

    jail, vol = parse_ref(ref)
    svc = ctx.service()
    try:
        made = svc.volume_snapshot(jail, vol, label)
    finally:
        svc.close()
    ctx.emit({"volume": ref, "snapshot": made}, lambda: click.echo(f"{ref}@{made}"))


def register(group: click.Group) -> None:
    for cmd in (destroy, rollback, history, volume):
        group.add_command(cmd)
