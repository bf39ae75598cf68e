"""Jail verbs: up, build, check, plan, ls, exec, start, stop, restart, destroy.

Each calls one method of the jail service (service/api.py): through this
host's agent when it answers, else in process; in a cluster the service sends
work for another host's jail to that host's agent."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import click

from rexcarcer.cli import complete
from rexcarcer.cli.context import Ctx, pass_ctx

if TYPE_CHECKING:
    from rexcarcer.model.plan import Action
    from rexcarcer.rexfile.ast import Rexfile
    from rexcarcer.service.api import JailService

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
    svc = ctx.service()
    try:
        info = svc.up(rexfile, jail, on_host=on_host)
    finally:
        svc.close()
    from rexcarcer.cli.render import up_summary

    data = info.as_json()
    ctx.emit(data, lambda: click.echo(up_summary(data, cluster=bool(ctx.config.etcd))))


@click.command()
@click.argument("file", type=REXFILE)
@pass_ctx
def build(ctx: Ctx, file: Path) -> None:
    """Run FILE's PROVISION steps (cached) and print the image snapshot."""
    rexfile = _load(file)
    svc = ctx.service()
    try:
        full = svc.build(rexfile)
    finally:
        svc.close()
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
@click.option("--platform", "platform", type=click.Choice(["freebsd", "linux"]),
              help="Plan for that OS: its defaults, commands and files; nothing runs.")  # fmt: skip
@pass_ctx
def plan(ctx: Ctx, file: Path, name: str | None, on_host: str | None,
         platform: str | None) -> None:  # fmt: skip
    """Print what `rex up FILE` would change, with command lines and the files
    with their content; change nothing.

    In a cluster the first line is where the jail would go and why; the steps
    follow when that is this host (else run `rex plan` on that host). With
    --platform, the plan is made in this process for that OS, from the same
    builders its backend runs."""
    rexfile = _load(file)
    jail = _name(rexfile, name)
    if platform is not None:
        actions = _plan_for(ctx, platform, rexfile, jail)
    else:
        svc = ctx.service()
        try:
            actions = svc.plan(rexfile, jail, on_host=on_host)
        finally:
            svc.close()
    ctx.emit([a.as_json() for a in actions], lambda: print_actions(actions))


def _plan_for(ctx: Ctx, platform: str, rexfile: Rexfile, jail: str) -> list[Action]:
    from rexcarcer.engine.plan import plan_up
    from rexcarcer.wiring import engine_for

    host = ctx.dry_host(platform)
    try:
        # the engine rex up would use on that platform: its admission and guard too
        return plan_up(engine_for(host), rexfile, jail)
    finally:
        host.close()


def print_actions(actions: list[Action]) -> None:
    """An action a line, then its files (with their content) and command lines
    (cli/render.py, which the thin client prints the agent's plan with)."""
    from rexcarcer.cli.render import plan_lines

    for line in plan_lines([a.as_json() for a in actions]):
        click.echo(line)


@click.command(name="ls")
@pass_ctx
def ls_(ctx: Ctx) -> None:
    """List jails: name, state, health, addresses, host name, services, published
    ports (HOSTPORT->PORT/PROTO, with the ON address before them), base, host.

    Health is that of a jail with a HEALTHCHECK (starting, healthy, unhealthy), or
    exited for one that stopped on its own and stays down (RESTART); `-` otherwise.
    -o wide adds the services' protocols, the image and when the jail was
    created; -o json is docs/schemas/ls.v1.json."""
    from rexcarcer.cli.render import ls_table

    svc = ctx.service()
    try:
        jails = [i.as_json() for i in svc.ls()]
    finally:
        svc.close()
    ctx.emit(jails, lambda: click.echo(ls_table(jails, wide=ctx.output == "wide")))


@click.command(name="exec", context_settings={"ignore_unknown_options": True})
@click.argument("name", shell_complete=complete.jail_names)
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
@pass_ctx
def exec_(ctx: Ctx, name: str, command: tuple[str, ...]) -> None:
    """Run COMMAND in the running jail NAME; its exit status is rex's (128+N
    when COMMAND is killed by signal N).

    \b
    rex exec web -- wget -qO- http://198.51.100.3/

    In a cluster, a jail on another host runs the command through that host's
    agent: without a terminal or standard input, its output (stdout and stderr
    merged) shown line by line as it comes."""

    def out(line: str) -> None:
        sys.stdout.write(line)
        sys.stdout.flush()

    svc = ctx.service()
    try:
        status = svc.exec(name, list(command), interactive=True, sink=out)
    finally:
        svc.close()
    sys.exit(status)


def _lifecycle(name: str, doc: str, verb: Callable[[JailService, str], object]) -> click.Command:
    @click.command(name=name, help=doc)
    @click.argument("names", nargs=-1, required=True, shell_complete=complete.jail_names)
    @pass_ctx
    def cmd(ctx: Ctx, names: tuple[str, ...]) -> None:
        svc = ctx.service()
        try:
            for jail in names:
                verb(svc, jail)
        finally:
            svc.close()

    return cmd


def register(group: click.Group) -> None:
    for cmd in (up, build, check, plan, ls_, exec_):
        group.add_command(cmd)
    # in a cluster, a jail on another host is handled by that host's agent
    group.add_command(_lifecycle("start", "Start stopped jails.", lambda s, n: s.start(n)))
    group.add_command(
        _lifecycle(
            "stop", "Stop jails (their datasets and addresses stay).", lambda s, n: s.stop(n)
        )
    )
    group.add_command(_lifecycle("restart", "Stop and start jails.", lambda s, n: s.restart(n)))
