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
OUTPUTS = ["text", "json", "wide"]  # wide: text with more columns where a command has them


class _LazyGroup(click.Group):
    """Loads a verb's module when click looks the verb up; listing loads all."""

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in VERBS:
            _load(VERBS[cmd_name])
        return super().get_command(ctx, cmd_name)

    def list_commands(self, ctx: click.Context) -> list[str]:
        _register()
        return super().list_commands(ctx)


@click.group(
    cls=_LazyGroup,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
@click.option("--root", type=click.Path(path_type=Path), envvar="REX_ROOT",
              help="State directory (/var/lib/rexcarcer; FreeBSD: /var/db/rexcarcer).")  # fmt: skip
@click.option("--config", "config_file", type=click.Path(path_type=Path),
              help="Configuration file (TOML).")  # fmt: skip
@click.option("-o", "--output", type=click.Choice(OUTPUTS), default="text",
              help="Output for commands that print data: text, json (docs/json.md), "
              "wide (rex ls: more columns).")  # fmt: skip
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
    28-44 DNS, identity, logs, etcd, cluster, base-verification, firewall, limit and
    joining errors; 45 an update in place failed and was rolled back; 46-47 network
    policy; 50 an export cannot be written or read; 51 DEPENDS; 52 no host agent for
    HEALTHCHECK, RESTART, DEPENDS; 53 an export refused (truncated, altered,
    untrusted); 54 a move failed (the jail runs where it was); 70 secrets.
    """
    ctx.obj = Ctx(root=root, config_file=config_file, output=output, debug=debug)
    logging.basicConfig(
        level=logging.DEBUG if debug else logging.WARNING, format="%(message)s", stream=sys.stderr
    )


# Which module registers each verb, so that a command imports its own module
# and no other (`rex ls` needs neither tarfile nor the CA's commands). A unit
# test registers every module and checks this table against what it finds.
VERBS: dict[str, str] = {
    "agent": "cluster_cmds", "base": "base_cmds", "build": "jail_cmds", "ca": "ca_cmds",
    "check": "jail_cmds", "cluster": "cluster_cmds", "completion": "complete",
    "console": "files_cmds", "cp": "files_cmds", "destroy": "gen_cmds", "dns": "dns_cmds",
    "doctor": "host_cmds", "exec": "jail_cmds", "history": "gen_cmds", "host": "host_cmds",
    "hosts": "cluster_cmds", "logs": "log_cmds", "ls": "jail_cmds", "plan": "jail_cmds",
    "restart": "jail_cmds", "rollback": "gen_cmds", "start": "jail_cmds", "stop": "jail_cmds",
    "trust": "trust_cmds", "up": "jail_cmds", "volume": "gen_cmds",
    "export": "transfer_cmds", "import": "transfer_cmds", "move": "transfer_cmds",
    "secret": "secret_cmds", "state": "state_cmds",
}  # fmt: skip
_loaded: set[str] = set()


def _load(module: str) -> None:
    """Register the verbs of ``rexcarcer.cli.MODULE`` on ``cli``, once."""
    if module in _loaded:
        return
    import importlib

    _loaded.add(module)
    before = set(cli.commands)
    importlib.import_module(f"rexcarcer.cli.{module}").register(cli)
    for name in set(cli.commands) - before:
        _add_output_option(cli.commands[name])


def _register() -> None:
    for module in dict.fromkeys(VERBS.values()):
        _load(module)


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
            ["-o", "--output"], type=click.Choice(OUTPUTS), default=None,
            expose_value=False, callback=_set_output, help="Output: text, json or wide.",
        ))  # fmt: skip


def build_cli() -> click.Group:
    """The whole command tree (``main`` loads only the verb it runs)."""
    _register()
    return cli


def main() -> None:
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
