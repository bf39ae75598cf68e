"""Jails between hosts: rex export, rex import, rex move (docs/volumes.md)."""

from __future__ import annotations

import contextlib
from pathlib import Path

import click

from rexcarcer.cli import complete
from rexcarcer.cli.context import Ctx, pass_ctx
from rexcarcer.errors import UsageError


@click.command(name="export")
@click.argument("name", shell_complete=complete.jail_names)
@click.argument("file", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--force", is_flag=True, help="Overwrite FILE when it exists.")
@pass_ctx
def export_(ctx: Ctx, name: str, file: Path, force: bool) -> None:
    """Write jail NAME into FILE: its current generation, its volumes and its record.

    The jail runs on: its root and volumes are snapshotted (one after the
    other) and sent into FILE as zfs send streams, after a header that this
    host signs with its key (its certificate chain included): the manifest
    gives the jail's record, the size and SHA-256 of every stream, this host
    and the time. `rex import FILE` on another host checks all of it before
    it receives anything. Kept generations and the volumes' snapshots are not
    exported. FILE must be a regular file; a failed export removes it. Run it
    on the host the jail runs on."""
    from rexcarcer.base.progress import human

    try:
        out = file.open("wb" if force else "xb")
    except FileExistsError as exc:
        raise UsageError(f"{file} exists", hint="--force overwrites it") from exc
    except OSError as exc:
        raise UsageError(f"cannot write {file}: {exc.strerror or exc}") from exc
    svc = ctx.service()
    try:
        with out:
            info = svc.export(name, out)
    except BaseException:
        with contextlib.suppress(OSError):
            file.unlink()
        raise
    finally:
        svc.close()
    data = {**info.as_json(), "file": str(file)}
    ctx.emit(data, lambda: click.echo(f"exported {name} to {file} ({human(info.size)} of "
                                      f"streams, signed by {info.host})"))  # fmt: skip


@click.command(name="import")
@click.argument("file", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--name", help="The jail's name here (default: the name it was exported with).")
@pass_ctx
def import_(ctx: Ctx, file: Path, name: str | None) -> None:
    """Make the jail exported in FILE (`rex export`) a jail of this host.

    Before anything is received: the signature must verify and come from a
    host of this cluster, or chain to a CA certificate `rex trust add` made
    trusted (never from a jail's certificate); every stream must have the size
    and SHA-256 the signed manifest gives (a truncated or altered file is
    refused); the name must be free in the cluster, and a fixed IP free and
    inside this host's subnet or declared public ranges. The streams are then
    received into temporary datasets, renamed into place only when all have
    arrived. The jail gets an address here (its fixed IP, if it has one), a new
    identity for it, its DNS records, and is started if it was running."""
    try:
        source = file.open("rb")
    except OSError as exc:
        raise UsageError(f"cannot read {file}: {exc.strerror or exc}") from exc
    svc = ctx.service()
    try:
        with source:
            info = svc.import_(source, name=name)
    finally:
        svc.close()
    ctx.emit(info.as_json(), lambda: click.echo(f"{info.name} is {info.state} at "
                                                f"{info.address or 'no address'}"))  # fmt: skip


@click.command()
@click.argument("name", shell_complete=complete.jail_names)
@click.option("--to", "to", required=True, metavar="HOST",
              help="The host of the cluster it moves to (`rex hosts`).")  # fmt: skip
@pass_ctx
def move(ctx: Ctx, name: str, to: str) -> None:
    """Move jail NAME and its volumes to host HOST of the cluster.

    The host it runs on sends its datasets to HOST's agent (mutual TLS) while
    it runs, stops it, sends the last changes, and HOST starts it with an
    identity for its address there; its DNS records follow it on every host,
    and its address here is released. A jail with a fixed IP moves only to a
    host whose jail subnet or declared public ranges hold that address. If
    anything fails before it runs on HOST, it runs where it was again and HOST
    keeps nothing. Kept generations and the volumes' snapshots stay behind
    and are removed with it. Interrupted, the same command run again finishes
    the move; for a jail on HOST already it does nothing (docs/faults.md)."""
    svc = ctx.service()
    try:
        info = svc.move(name, to)
    finally:
        svc.close()
    ctx.emit(info.as_json(), lambda: click.echo(f"{info.name} is {info.state} on {info.host} "
                                                f"at {info.address or 'no address'}"))  # fmt: skip


def register(group: click.Group) -> None:
    for cmd in (export_, import_, move):
        group.add_command(cmd)
