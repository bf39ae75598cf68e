"""Host verbs: rex doctor, rex host setup, rex host serve."""

from __future__ import annotations

import sys

import click

from rexcarcer.cli.context import Ctx, pass_ctx


@click.command()
@pass_ctx
def doctor(ctx: Ctx) -> None:
    """Check the host: configuration, ZFS, jail support, state store, DNS."""
    from rexcarcer.cli.output import table
    from rexcarcer.doctor import run_checks

    host = ctx.host()
    try:
        results = run_checks(host)
    finally:
        host.close()
    rows = [[r.name, "ok" if r.ok else "FAIL", r.detail] for r in results]
    ctx.emit([{"check": r.name, "ok": r.ok, "detail": r.detail} for r in results],
             lambda: click.echo(table(["check", "status", "detail"], rows)))  # fmt: skip
    if not all(r.ok for r in results):
        sys.exit(1)


@click.group()
def host() -> None:
    """The jailer services this host runs for its jails (unbound for DNS)."""


def _global_args(ctx: Ctx) -> list[str]:
    """How to run rex again with this configuration (for a unit or a detached serve)."""
    args = ["--root", str(ctx.config.root)]
    if ctx.config_file is not None:
        args += ["--config", str(ctx.config_file.absolute())]
    return args


@host.command()
@click.option("--no-start", is_flag=True, help="Write the configuration only.")
@pass_ctx
def setup(ctx: Ctx, no_start: bool) -> None:
    """Configure the jailer services and start them with the OS's service manager.

    FreeBSD: /var/unbound/conf.d/rexcarcer.conf, sysrc + service local_unbound.
    Linux with systemd: $REX_ROOT/unbound/unbound.conf and the unit
    rexcarcer-jailer.service, which runs `rex host serve`. Without a service
    manager: use `rex host serve`. Then loads rex's firewall rules (the guard,
    running jails' published ports, NAT) and enables IP forwarding where
    PUBLISH, NAT or a public address needs it."""
    from rexcarcer.dns.serve import setup as do_setup
    from rexcarcer.netpolicy.hook import firewall_setup

    h = ctx.host()
    try:
        message = do_setup(h, start=not no_start, global_args=_global_args(ctx))
        message += "\n" + firewall_setup(h)
    finally:
        h.close()
    ctx.emit({"status": message}, lambda: click.echo(message))


@host.command()
@click.option("--detach", is_flag=True, help="Run in the background; return once DNS answers.")
@click.option("--stop", "stop_", is_flag=True, help="Stop a detached `rex host serve`.")
@pass_ctx
def serve(ctx: Ctx, detach: bool, stop_: bool) -> None:
    """Run the jailer services in the foreground, supervised by rex.

    Writes unbound's configuration, starts unbound on the host's jail-subnet
    address, re-publishes every record and restarts unbound if it exits. For
    hosts without a service manager, demos and tests. SIGTERM/Ctrl-C stops it."""
    from rexcarcer.dns import serve as services

    h = ctx.host()
    try:
        if stop_:
            pids = services.stop(h)
            msg = f"stopped {', '.join(map(str, pids))}" if pids else "not running"
            ctx.emit({"stopped": pids}, lambda: click.echo(msg))
        elif detach:
            proc = services.detach(h, _global_args(ctx))
            msg = f"rex host serve running (pid {proc.pid}); stop it: rex host serve --stop"
            ctx.emit({"pid": proc.pid}, lambda: click.echo(msg))
        else:
            services.serve(h)
    finally:
        h.close()


def register(group: click.Group) -> None:
    group.add_command(doctor)
    group.add_command(host)
