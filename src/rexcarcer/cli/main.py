"""The ``rex`` command: the only place that prints or exits.

Heavy modules are imported inside the commands that need them, so that
``rex --help`` and ``rex ls`` stay fast.
"""

from __future__ import annotations

import logging
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from rexcarcer.cli.context import Ctx
from rexcarcer.errors import RexError

F = TypeVar("F", bound=Callable[..., Any])


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("--root", type=click.Path(path_type=Path), envvar="REX_ROOT",
              help="State directory (/var/lib/rexcarcer; FreeBSD: /var/db/rexcarcer).")  # fmt: skip
@click.option("--config", "config_file", type=click.Path(path_type=Path),
              help="Configuration file (TOML).")  # fmt: skip
@click.option("-o", "--output", type=click.Choice(["text", "json"]), default="text",
              help="Output format for commands that print data.")  # fmt: skip
@click.option("--debug", is_flag=True, help="Log every OS command; show tracebacks.")
@click.version_option(package_name="rexcarcer", prog_name="rex")
@click.pass_context
def cli(
    ctx: click.Context, root: Path | None, config_file: Path | None, output: str, debug: bool
) -> None:
    """RexCarcer: declarative jails from signed bases, on FreeBSD (jail(8)) and Linux
    (namespaces).

    \b
    A jail is described by a .rex file (see docs/rexfile.md):
        BASE busybox
        PROVISION COPY index.html /var/www/index.html
        SERVICE web PORT 80
    and `rex up web.rex` builds it (each step cached as a ZFS snapshot), gives it an
    address, writes its configuration and starts it.

    \b
    Exit status: 0 success; 2 usage; 10 .rex error; 11 not found; 12 conflict;
    20-27 OS, storage, runtime, state, address, build, path and capability errors;
    28-43 DNS, identity, logs, etcd, cluster, base-verification, firewall and limit
    errors; 44 an update in place failed and was rolled back.
    """
    ctx.obj = Ctx(root=root, config_file=config_file, output=output, debug=debug)
    logging.basicConfig(
        level=logging.DEBUG if debug else logging.WARNING, format="%(message)s", stream=sys.stderr
    )


def _register() -> None:
    from rexcarcer.cli import (
        base_cmds,
        ca_cmds,
        cluster_cmds,
        complete,
        dns_cmds,
        files_cmds,
        gen_cmds,
        host_cmds,
        jail_cmds,
        log_cmds,
        state_cmds,
        trust_cmds,
    )  # fmt: skip

    jail_cmds.register(cli)
    gen_cmds.register(cli)
    files_cmds.register(cli)
    base_cmds.register(cli)
    host_cmds.register(cli)
    dns_cmds.register(cli)
    ca_cmds.register(cli)
    log_cmds.register(cli)
    trust_cmds.register(cli)
    state_cmds.register(cli)
    cluster_cmds.register(cli)
    complete.register(cli)


def _set_output(ctx: click.Context, _param: click.Parameter, value: str | None) -> None:
    if value is not None:
        ctx.ensure_object(Ctx).output = value


def _add_output_option(cmd: click.Command) -> None:
    """``-o json`` is accepted after the verb too (``rex ls -o json``)."""
    if isinstance(cmd, click.Group):
        for sub in cmd.commands.values():
            _add_output_option(sub)
        return
    if not any(p.name == "output" for p in cmd.params):
        cmd.params.append(click.Option(
            ["-o", "--output"], type=click.Choice(["text", "json"]), default=None,
            expose_value=False, callback=_set_output, help="Output format.",
        ))  # fmt: skip


def build_cli() -> click.Group:
    """The whole command tree (the verbs are registered on first use)."""
    if not cli.commands:
        _register()
        for command in cli.commands.values():
            _add_output_option(command)
    return cli


def main() -> None:
    build_cli()
    debug = "--debug" in sys.argv
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        cli.main(standalone_mode=False)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        exc.show()
        sys.exit(2)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        sys.exit(130)
    except RexError as exc:
        if debug:
            logging.getLogger("rexcarcer").exception("traceback")
        click.echo(f"error: {exc.message}", err=True)
        if exc.hint:
            click.echo(f"hint: {exc.hint}", err=True)
        sys.exit(exc.exit_code)
