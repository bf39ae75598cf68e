"""State verbs: rex state backup / backups / restore (the embedded store's
backups; docs/faults.md says when to use them)."""

from __future__ import annotations

from pathlib import Path

import click

from rexcarcer.cli.context import Ctx, pass_ctx
from rexcarcer.errors import UsageError


@click.group()
def state() -> None:
    """Back up and restore this host's state database (state.db)."""


def _embedded(ctx: Ctx) -> Path:
    if ctx.config.etcd:
        raise UsageError(
            "this host keeps its state in etcd, not in state.db",
            hint="back etcd up with `etcdctl snapshot save`; see docs/faults.md",
        )
    return ctx.config.db_path


@state.command()
@pass_ctx
def backup(ctx: Ctx) -> None:
    """Take an online backup of state.db now (rex also takes one every 10
    minutes of use and keeps the newest five)."""
    from rexcarcer.state.sqlite import SqliteStore

    store = SqliteStore(_embedded(ctx), backup=False)  # opening checks it
    try:
        from rexcarcer.state.backup import take

        made = take(store.db, store.path)
    finally:
        store.close()
    assert made is not None
    ctx.emit(made.as_json(), lambda: click.echo(str(made.path)))


@state.command(name="backups")
@pass_ctx
def backups_(ctx: Ctx) -> None:
    """List the kept backups of state.db, newest first."""
    from rexcarcer.cli.output import table
    from rexcarcer.state.backup import backups

    rows = [b.as_json() for b in backups(_embedded(ctx))]
    ctx.emit(rows, lambda: click.echo(table(
        ["taken", "size", "path"], [[str(r["taken"]), str(r["size"]), str(r["path"])]
                                    for r in rows])))  # fmt: skip


@state.command()
@click.option("--from", "source", type=click.Path(path_type=Path, dir_okay=False, exists=True),
              help="Restore this backup file instead of the newest good one.")  # fmt: skip
@pass_ctx
def restore(ctx: Ctx, source: Path | None) -> None:
    """Replace state.db with the newest backup that passes its check.

    The replaced file is kept as state.db.damaged-TIME. Stop the agent and
    every other rex command first. Jails created or destroyed after the
    backup was taken need an administrator's look (docs/faults.md)."""
    from rexcarcer.state.backup import restore as restore_db

    used, moved = restore_db(_embedded(ctx), source)
    kept = f"; the replaced file is {moved}" if moved else ""
    click.echo(f"restored {ctx.config.db_path} from {used.path}{kept}", err=True)


def register(group: click.Group) -> None:
    group.add_command(state)
