"""State verbs: rex state backup / backups / restore (the embedded store's
backups) and rex state rebuild (the records from the datasets' properties);
docs/faults.md says when to use them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from rexcarcer.cli.context import Ctx, pass_ctx
from rexcarcer.errors import UsageError


@click.group()
def state() -> None:
    """Back up, restore or rebuild this host's state database (state.db)."""


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


@state.command()
@click.option("--force", is_flag=True,
              help="Rebuild even though the store holds jail records: they, the kept "
              "generations, address claims, DNS records and certificate records are "
              "replaced; the rest of the store is kept.")  # fmt: skip
@pass_ctx
def rebuild(ctx: Ctx, force: bool) -> None:
    """Rebuild the jail records from the properties of the jails' datasets.

    Every `rex up`, update, start, stop and rollback copies the jail's record
    onto its dataset (the rexcarcer:record property; kept generations keep
    theirs). This reads them all with one zfs command and puts back the jail
    records, kept generations and address claims, then the DNS records and
    names of the running jails and the certificate records (from the
    certificates in the jails, checked against this host's jail CA). No jail
    is started, stopped or changed.

    A damaged state.db is set aside as state.db.damaged-TIME first. A store
    that holds jail records is left alone (exit 83) unless --force. A dataset
    whose record is missing or malformed is skipped and named, the others are
    rebuilt (exit 84). Stop the agent first (docs/faults.md)."""
    from rexcarcer.engine.rebuild import rebuild as rebuild_state
    from rexcarcer.errors import RebuildIncomplete, StateDamaged
    from rexcarcer.state.backup import set_aside
    from rexcarcer.state.sqlite import SqliteStore

    db = _embedded(ctx)
    _warn_if_agent(ctx)
    moved = None
    if db.exists():
        try:
            SqliteStore(db, backup=False).close()  # opening checks it
        except StateDamaged as exc:
            moved = set_aside(db)
            click.echo(f"state database {db} is damaged ({exc.message}); set aside as {moved}",
                       err=True)  # fmt: skip
    eng = ctx.engine()
    try:
        report = rebuild_state(eng, force=force)
    finally:
        eng.close()
    data = {**report.as_json(), "damaged": str(moved) if moved else None}
    ctx.emit(data, lambda: _print_rebuild(data))
    if report.skipped:
        shown = "; ".join(f"{s.dataset}: {s.reason}" for s in report.skipped[:5])
        raise RebuildIncomplete(
            f"{len(report.skipped)} dataset(s) skipped, the others rebuilt: {shown}",
            hint="`rex destroy NAME` removes a jail's dataset whose record is gone (its volumes "
            "are kept), then `rex up` its .rex file; see docs/faults.md",
        )


def _warn_if_agent(ctx: Ctx) -> None:
    """The agent writes health and DNS records while it runs: say so (docs/faults.md)."""
    from rexcarcer.service.socket import connect

    sock = connect(ctx.config.agent_socket)
    if sock is not None:
        sock.close()
        click.echo(f"warning: the agent answers on {ctx.config.agent_socket}; stop it first "
                   "(service rex-agent stop / systemctl stop rex-agent)", err=True)  # fmt: skip


def _print_rebuild(data: dict[str, Any]) -> None:
    for s in data["skipped"]:
        click.echo(f"skipped {s['dataset']}: {s['reason']}", err=True)
    for n in data["notes"]:
        click.echo(f"note: {n['jail']}: {n['note']}", err=True)
    click.echo(f"rebuilt {len(data['jails'])} jail(s) ({len(data['running'])} running), "
               f"{len(data['generations'])} kept generation(s), {len(data['addresses'])} "
               "address claim(s)")  # fmt: skip


def register(group: click.Group) -> None:
    group.add_command(state)
