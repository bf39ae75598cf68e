"""Files in and out of a jail, and a shell in it: rex cp, rex console."""

from __future__ import annotations

import io
import sys
import tarfile
from pathlib import Path

import click

from rexcarcer.cli import complete
from rexcarcer.cli.context import Ctx, pass_ctx
from rexcarcer.errors import UsageError

CP_HINT = "write rex cp SRC NAME:/PATH or rex cp NAME:/PATH DST (a local path with ':' as ./a:b)"


def jail_side(arg: str) -> tuple[str, str] | None:
    """(jail, path) when ``arg`` is NAME:/PATH, else None (a local path)."""
    from rexcarcer.names import jail_name_problem

    name, colon, path = arg.partition(":")
    if colon and jail_name_problem(name) is None and path.startswith("/"):
        return name, path
    return None


@click.command()
@click.argument("src")
@click.argument("dst")
@pass_ctx
def cp(ctx: Ctx, src: str, dst: str) -> None:
    """Copy files between this host and a jail: one side is NAME:/PATH.

    \b
    rex cp ./site web:/usr/local/www/   the directory's contents into the jail
    rex cp web:/var/log/app.log ./      a file out of the jail

    Paths in the jail are resolved as the jail sees them: no symlink in the jail
    makes rex read or write a file of the host. Links in the jail are copied as
    links; devices and fifos are not copied."""
    into, out_of = jail_side(dst), jail_side(src)
    if (into is None) == (out_of is None):
        raise UsageError("one side of rex cp is a jail path (NAME:/PATH), the other a local one",
                         hint=CP_HINT)  # fmt: skip
    svc = ctx.service()
    try:
        if into is not None:
            svc.cp_in(into[0], into[1], _pack(Path(src)))
        else:
            assert out_of is not None
            _unpack(svc.cp_out(out_of[0], out_of[1]), Path(dst))
    finally:
        svc.close()


def _pack(path: Path) -> bytes:
    if not path.exists() and not path.is_symlink():
        raise UsageError(f"{path} does not exist", hint=CP_HINT)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        tar.add(path, arcname=path.resolve().name if path.name in ("", ".", "..") else path.name)
    return buf.getvalue()


def _unpack(data: bytes, dst: Path) -> None:
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
        members = tar.getmembers()
        if not members:
            return
        top = members[0].name.split("/")[0]
        if dst.is_dir():
            tar.extractall(dst, filter="tar")  # links stay links, nothing lands outside dst
            return
        # a new name: the top entry becomes dst
        for m in members:
            m.name = dst.name + m.name[len(top) :]
        dst.parent.mkdir(parents=True, exist_ok=True)
        tar.extractall(dst.parent, members=members, filter="tar")


@click.command()
@click.argument("name", shell_complete=complete.jail_names)
@pass_ctx
def console(ctx: Ctx, name: str) -> None:
    """An interactive login shell in jail NAME (as root, on this terminal).

    Exits with the shell's status. For a jail on another host, run it there."""
    svc = ctx.service()
    try:
        status = svc.console(name)
    finally:
        svc.close()
    sys.exit(status)


def register(group: click.Group) -> None:
    group.add_command(cp)
    group.add_command(console)
