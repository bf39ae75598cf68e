"""Jail verbs: up, build, check, plan, ls, exec, start, stop, restart, destroy."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from rexcarcer.cli import complete
from rexcarcer.cli.main import Ctx, pass_ctx

if TYPE_CHECKING:
    from rexcarcer.engine.host import Host
    from rexcarcer.rexfile.ast import Rexfile

REXFILE = click.Path(path_type=Path, dir_okay=False)


def _load(path: Path) -> Rexfile:
    from rexcarcer.rexfile.parser import load

    return load(path)


def _name(rexfile: Rexfile, name: str | None) -> str:
    from rexcarcer.names import check_jail_name

    return check_jail_name(name or rexfile.default_name)


@click.command()
@click.argument("file", type=REXFILE)
@click.option("--name", help="Jail name (default: the file's stem).")
@click.option("--host", "on_host", help="Cluster: run the jail on this host.",
              shell_complete=complete.host_names)  # fmt: skip
@pass_ctx
def up(ctx: Ctx, file: Path, name: str | None, on_host: str | None) -> None:
    """Build (cached), create, start and publish the jail FILE describes.

    Idempotent: with nothing changed, a second run changes nothing. A failure
    at any step rolls back what this run created and names the step. In a
    cluster the jail goes to --host, else to the host whose subnet holds its
    fixed IP, else to the live host with the fewest jails; the .rex file and
    its COPY sources travel to that host's agent over mutual TLS."""
    rexfile = _load(file)
    jail = _name(rexfile, name)
    host = ctx.host()
    try:
        info = _up(host, rexfile, jail, on_host)
    finally:
        host.close()
    ips = info.get("ips") or ["no address"]
    where = f" on {info['host']}" if ctx.config.etcd else ""
    summary = f"{info['name']} is {info['state']}: {ips[0]} ({info['hostname']}){where}"
    ctx.emit(info, lambda: click.echo(summary))


def _up(host: Host, rexfile: Rexfile, jail: str, on_host: str | None) -> dict[str, Any]:
    from rexcarcer.engine import jails
    from rexcarcer.errors import UsageError

    if host.config.etcd:
        from rexcarcer.cluster import client

        return client.up(host, rexfile, jail, on_host)
    if on_host not in (None, host.config.host):
        raise UsageError(
            "--host places jails in a cluster; this host is not in one",
            hint="join a cluster (`rex cluster join`), or leave out --host",
        )
    return jails.up(host, rexfile, jail).as_json()


@click.command()
@click.argument("file", type=REXFILE)
@pass_ctx
def build(ctx: Ctx, file: Path) -> None:
    """Run FILE's PROVISION steps (cached) and print the image snapshot."""
    from rexcarcer.engine import build as builder
    from rexcarcer.engine import jails

    rexfile = _load(file)
    host = ctx.host()
    try:
        host.storage.ensure_layout()
        image = builder.build(host, rexfile, jails.resolve_base(host, rexfile))
    finally:
        host.close()
    full = f"{host.config.dataset}/{image}"
    ctx.emit({"image": full}, lambda: click.echo(full))


@click.command()
@click.argument("file", type=REXFILE)
@pass_ctx
def check(ctx: Ctx, file: Path) -> None:
    """Parse and validate FILE without touching the host."""
    rexfile = _load(file)
    ctx.emit(rexfile.canonical(), lambda: click.echo(f"{file}: ok"))


@click.command()
@click.argument("file", type=REXFILE)
@click.option("--name", help="Jail name (default: the file's stem).")
@click.option("--host", "on_host", help="Cluster: plan for running the jail on this host.",
              shell_complete=complete.host_names)  # fmt: skip
@pass_ctx
def plan(ctx: Ctx, file: Path, name: str | None, on_host: str | None) -> None:
    """Print what `rex up FILE` would change, with command lines; change nothing.

    In a cluster the first line is where the jail would go and why; the steps
    follow when that is this host (else run `rex plan` on that host)."""
    from rexcarcer.engine.plan import Action, plan_up
    from rexcarcer.errors import UsageError

    rexfile = _load(file)
    jail = _name(rexfile, name)
    host = ctx.host()
    try:
        actions: list[Action] = []
        here = True
        if host.config.etcd:
            from rexcarcer.cluster import client

            where = client.decide(host.store, rexfile, jail, on_host, host.config.host)
            here = where.host == host.config.host
            actions.append(Action("place", f"on host {where.host}: {where.why}"))
            if not here:
                actions.append(Action("remote", f"send {file.name} and its COPY sources to "
                                      f"{where.host}'s agent, which builds and starts {jail}; "
                                      f"`rex plan` on {where.host} shows its steps"))  # fmt: skip
        elif on_host not in (None, host.config.host):
            raise UsageError(
                "--host places jails in a cluster; this host is not in one",
                hint="join a cluster (`rex cluster join`), or leave out --host",
            )
        if here:
            actions += plan_up(host, rexfile, jail)
    finally:
        host.close()

    def text() -> None:
        for a in actions:
            click.echo(f"{a.kind:8} {a.description}")
            for cmd in a.commands:
                click.echo(f"           $ {cmd}")

    ctx.emit([a.as_json() for a in actions], text)


@click.command(name="ls")
@pass_ctx
def ls_(ctx: Ctx) -> None:
    """List jails: name, state, addresses, host name, services, base, host."""
    from rexcarcer.cli.output import table
    from rexcarcer.engine import jails

    host = ctx.host()
    try:
        infos = jails.list_jails(host)
    finally:
        host.close()
    rows = [
        [i.name, i.state, i.address or "-", i.hostname,
         ",".join(f"{s['name']}/{s['proto']}:{s['port']}" for s in i.services) or "-",
         i.base, i.host]
        for i in infos
    ]  # fmt: skip
    headers = ["name", "state", "ip", "hostname", "services", "base", "host"]
    ctx.emit([i.as_json() for i in infos], lambda: click.echo(table(headers, rows)))


@click.command(name="exec", context_settings={"ignore_unknown_options": True})
@click.argument("name", shell_complete=complete.jail_names)
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
@pass_ctx
def exec_(ctx: Ctx, name: str, command: tuple[str, ...]) -> None:
    """Run COMMAND in the running jail NAME; its exit status is rex's.

    \b
    rex exec web -- wget -qO- http://198.51.100.3/

    In a cluster, a jail on another host runs the command through that host's
    agent: without a terminal or standard input, its output (stdout and stderr
    merged) shown line by line as it comes."""
    from rexcarcer.engine import jails

    host = ctx.host()
    try:
        rec = jails.record(host, name) if host.config.etcd else None  # (one read when single)
        owner = jails.remote_owner(host, rec)
        if owner is not None:
            from rexcarcer.cluster import client

            def out(line: str) -> None:
                sys.stdout.write(line)
                sys.stdout.flush()

            sys.exit(client.exec_remote(host, owner, name, list(command), out))
        done = jails.exec_in(host, name, list(command), interactive=True)
    finally:
        host.close()
    sys.exit(done.returncode)


def _lifecycle(verb: str, doc: str) -> click.Command:
    @click.command(name=verb, help=doc)
    @click.argument("names", nargs=-1, required=True, shell_complete=complete.jail_names)
    @pass_ctx
    def cmd(ctx: Ctx, names: tuple[str, ...]) -> None:
        from rexcarcer.engine import jails

        host = ctx.host()
        try:
            for name in names:
                if host.config.etcd:  # the jail's own host does it
                    from rexcarcer.cluster import client

                    client.lifecycle(host, name, verb)
                else:
                    getattr(jails, verb)(host, name)
        finally:
            host.close()

    return cmd


def register(group: click.Group) -> None:
    for cmd in (up, build, check, plan, ls_, exec_):
        group.add_command(cmd)
    # in a cluster, a jail on another host is handled by that host's agent
    group.add_command(_lifecycle("start", "Start stopped jails."))
    group.add_command(_lifecycle("stop", "Stop jails (their datasets and addresses stay)."))
    group.add_command(_lifecycle("restart", "Stop and start jails."))
    group.add_command(_lifecycle(
        "destroy", "Stop jails, release their addresses and destroy their datasets."))  # fmt: skip
