"""Host verbs: rex doctor, rex host setup, rex host serve."""

from __future__ import annotations

import sys

import click

from rexcarcer.cli.context import Ctx, pass_ctx


@click.command()
@pass_ctx
def doctor(ctx: Ctx) -> None:
    """Check the host: configuration, ZFS, jail support, state store, DNS, logs, time.

    The time check asks the time daemon (chronyd, ntpd or systemd-timesyncd)
    whether it is synchronised and by how much the clock is off."""
    from rexcarcer.cli.output import table
    from rexcarcer.doctor import run_checks

    host = ctx.host()
    try:
        results = run_checks(host)
    finally:
        host.close()
    rows = [[r.name, "ok" if r.ok else "FAIL", r.detail] for r in results]
    ctx.emit([r.as_json() for r in results],
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
@click.option("--no-start", is_flag=True, help="Write the configuration files only.")
@click.option("--dry-run", is_flag=True,
              help="Print every file (with its content) and command; change nothing.")  # fmt: skip
@click.option("--platform", "platform", type=click.Choice(["freebsd", "linux"]),
              help="With --dry-run: for that OS, as on a freshly installed host.")  # fmt: skip
@pass_ctx
def setup(ctx: Ctx, no_start: bool, dry_run: bool, platform: str | None) -> None:
    """Configure the jailer services and start them with the OS's service manager.

    FreeBSD: the jail interface (a loopback clone renamed rex0, with the host's
    jail-subnet address, now and in rc.conf), local_unbound with
    /var/unbound/conf.d/rexcarcer.conf (enabled first, then `service
    local_unbound setup`, which also points /etc/resolv.conf at 127.0.0.1,
    keeping a backup in /var/backups), the log collector's rc.d script, and the
    agent when its rc.d script is installed; ntpd (sysrc ntpd_enable=YES,
    ntpd_sync_on_start=YES; service ntpd start). Linux with systemd:
    $REX_ROOT/unbound/unbound.conf and the unit rexcarcer-jailer.service, which
    runs `rex host serve`; chrony's unit (or systemd-timesyncd through timedatectl
    set-ntp) enabled and started. Without a service manager: use `rex host serve`,
    and run a time daemon yourself. Then loads rex's firewall rules (the guard,
    running jails' published ports, NAT) and enables IP forwarding where
    PUBLISH, NAT or a public address needs it."""
    from rexcarcer import hostsetup
    from rexcarcer.errors import UsageError
    from rexcarcer.netpolicy.hook import firewall_setup

    if platform is not None and not dry_run:
        raise UsageError("--platform plans for another OS: it needs --dry-run",
                         hint=f"rex host setup --platform {platform} --dry-run")  # fmt: skip
    if dry_run:
        kind = platform or str(ctx.config.runtime)
        h = ctx.dry_host(kind)
        try:
            fresh = kind != str(ctx.config.runtime)
            actions = hostsetup.actions(hostsetup.plan(h, _global_args(ctx), fresh=fresh))
        finally:
            h.close()
        from rexcarcer.cli.jail_cmds import print_actions

        ctx.emit([a.as_json() for a in actions], lambda: print_actions(actions))
        return
    h = ctx.host()
    try:
        message = hostsetup.setup(h, start=not no_start, global_args=_global_args(ctx))
        if not no_start:  # --no-start writes files only
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
