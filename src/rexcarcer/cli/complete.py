"""Shell completion: the sources click asks for argument values, and
``rex completion SHELL``, which prints the script for bash, zsh or fish.

The script runs ``rex`` with ``_REX_COMPLETE=<shell>_complete`` at every TAB
(click.shell_completion). Commands and options come from the click tree;
the values here come from cheap local sources only, never the network:

- jail names: the embedded SQLite store, opened read-only (``mode=ro``: a
  missing store is not created), keys ``jails/<name>``; in a cluster the
  jails live in etcd, so none are offered;
- base names: one ``zfs list`` of ``DATASET/bases`` (the storage driver's own
  argv and parser), with a short timeout;
- host names: ``$REX_ROOT/cache/hosts.json``, which ``rex hosts`` rewrites;
- volumes (``JAIL.VOLUME``): the VOLUME entries of those jail records (a
  volume kept after ``rex destroy`` has no record and is not offered).

A source that fails offers nothing: the user's prompt must never show a
traceback, and a TAB must never take long.
"""

from __future__ import annotations

import functools
import json
import logging
import re
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:
    from rexcarcer.config import Config
    from rexcarcer.run import Runner

log = logging.getLogger(__name__)

SHELLS = ("bash", "zsh", "fish")
PROG = "rex"
COMPLETE_VAR = "_REX_COMPLETE"
HOSTS_CACHE = Path("cache") / "hosts.json"
ZFS_TIMEOUT = 5.0
# Cluster host names are DNS labels (cluster/model.py _HOST_NAME); so are volume
# names (rexfile/running.py _VOLUME_NAME).
_HOST = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")

Source = Callable[[click.Context, click.Parameter, str], list[str]]


def _quiet(source: Source) -> Source:
    """Any failure completes nothing (see the module docstring)."""

    @functools.wraps(source)
    def wrapper(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[str]:
        try:
            return sorted(v for v in source(ctx, param, incomplete) if v.startswith(incomplete))
        except Exception:  # a bad config, a locked or corrupt store, zfs missing or hung
            log.debug("completion of %s failed", param.name, exc_info=True)
            return []

    return wrapper


def _config(ctx: click.Context) -> Config:
    """The configuration the command being completed would use: ``--root`` and
    ``--config`` as typed so far (click parses them before completing)."""
    from rexcarcer.config import load_config

    root = ctx.find_root().params
    return load_config(config_file=root.get("config_file"), root=root.get("root"))


def store_items(db: Path, prefix: str) -> list[tuple[str, str]]:
    """(key, value) under ``prefix`` in the SQLite store (state/sqlite.py's ``kv``
    table), prefix removed; the file is opened read-only and never created."""
    import sqlite3
    from urllib.parse import quote

    # sqlite3 URI filenames: the path is percent-encoded (sqlite.org/uri.html)
    con = sqlite3.connect(f"file:{quote(str(db))}?mode=ro", uri=True, timeout=1.0)
    try:
        rows = con.execute(
            "SELECT key, value FROM kv WHERE key >= ? AND key < ? ORDER BY key",
            (prefix, prefix + "\U0010ffff"),
        ).fetchall()
    finally:
        con.close()
    return [(str(key)[len(prefix) :], str(value)) for key, value in rows]


def store_keys(db: Path, prefix: str) -> list[str]:
    """Keys under ``prefix`` in the SQLite store (state/sqlite.py's ``kv`` table),
    prefix removed; the file is opened read-only and never created."""
    return [key for key, _ in store_items(db, prefix)]


def _jails(ctx: click.Context) -> list[str]:
    from rexcarcer.names import jail_name_problem

    config = _config(ctx)
    if config.etcd:  # the cluster's jails are in etcd: no network while completing
        return []
    from rexcarcer.model.keys import JAILS

    return [n for n in store_keys(config.db_path, JAILS) if jail_name_problem(n) is None]


def _volume_refs(ctx: click.Context) -> list[str]:
    from rexcarcer.model.keys import JAILS
    from rexcarcer.names import jail_name_problem

    config = _config(ctx)
    if config.etcd:
        return []
    refs = []
    for name, value in store_items(config.db_path, JAILS):
        if jail_name_problem(name) is not None:
            continue
        try:
            volumes = json.loads(value).get("volumes") or []
            found = [v["name"] for v in volumes if isinstance(v, dict)]
        except (ValueError, AttributeError, KeyError, TypeError):
            continue  # a record rex cannot read offers nothing
        refs += [f"{name}.{v}" for v in found if isinstance(v, str) and _HOST.fullmatch(v)]
    return refs


@_quiet
def volume_refs(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[str]:
    return [r for r in _volume_refs(ctx) if r not in _typed(ctx, param)]


def _typed(ctx: click.Context, param: click.Parameter) -> set[str]:
    """Values already given to a repeatable argument (``rex stop web <TAB>``)."""
    value = ctx.params.get(param.name or "")
    return set(value) if isinstance(value, tuple | list) else set()


@_quiet
def jail_names(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[str]:
    return [n for n in _jails(ctx) if n not in _typed(ctx, param)]


@_quiet
def logged_jail_names(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[str]:
    """Jails, and the jails whose log the collector keeps (a destroyed jail's stays)."""
    from rexcarcer.logs.collector import CollectorPaths
    from rexcarcer.names import jail_name_problem

    logs = CollectorPaths.under(_config(ctx).root).logs
    logged = [p.stem for p in logs.glob("*.log") if jail_name_problem(p.stem) is None]
    return sorted(set(_jails(ctx)) | set(logged))


def base_names_with(runner: Runner, dataset: str) -> list[str]:
    """The bases under ``dataset``: the zfs driver's listing of ``bases/``."""
    from rexcarcer.base.manifest import NAME
    from rexcarcer.storage.zfs import list_children_argv, parse_children

    argv = list_children_argv(f"{dataset}/bases", ())
    done = runner.run(argv, check=False, timeout=ZFS_TIMEOUT)
    if not done.ok:
        return []
    names = (ds.name.removeprefix("bases/") for ds in parse_children(done.stdout, dataset, ()))
    # NAME: what `rex base import` accepts; a base being received (_recv-...) is not one
    return [n for n in names if NAME.match(n)]


@_quiet
def base_names(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[str]:
    from rexcarcer.run import SubprocessRunner

    return base_names_with(SubprocessRunner(), _config(ctx).dataset)


def remember_hosts(root: Path, names: Iterable[str]) -> None:
    """Keep the cluster's host names for completion (``rex hosts`` calls this).

    Only a cache: failing to write it must not fail the command that listed
    the hosts, so a failure is logged (``--debug``) and ignored."""
    from rexcarcer.fsutil import atomic_write

    path = root / HOSTS_CACHE
    try:  # readers see the old list or the new one
        atomic_write(path, json.dumps({"hosts": sorted(set(names))}) + "\n", make_parents=True)
    except OSError as exc:
        log.debug("cannot write %s: %s", path, exc)


@_quiet
def host_names(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[str]:
    data = json.loads((_config(ctx).root / HOSTS_CACHE).read_text())
    hosts = data.get("hosts", []) if isinstance(data, dict) else []
    return [h for h in hosts if isinstance(h, str) and _HOST.fullmatch(h)]


def script(group: click.Command, shell: str) -> str:
    """The completion script for ``shell``, as ``_REX_COMPLETE=<shell>_source rex``
    prints it."""
    from click.shell_completion import get_completion_class

    cls = get_completion_class(shell)
    if cls is None:
        raise click.BadParameter(f"no completion for {shell!r}; use one of {', '.join(SHELLS)}")
    return cls(group, {}, PROG, COMPLETE_VAR).source()


@click.command()
@click.argument("shell", type=click.Choice(SHELLS))
@click.pass_context
def completion(ctx: click.Context, shell: str) -> None:
    """Print the completion script for SHELL (bash, zsh or fish).

    \b
    rex completion bash > /usr/local/share/bash-completion/completions/rex
    rex completion zsh > /usr/local/share/zsh/site-functions/_rex
    rex completion fish > ~/.config/fish/completions/rex.fish

    It completes commands and options, this host's jails and their volumes, its
    bases and the cluster's hosts as `rex hosts` last listed them; it never uses
    the network. The FreeBSD package installs the three scripts."""
    click.echo(script(ctx.find_root().command, shell), nl=False)


def register(group: click.Group) -> None:
    group.add_command(completion)
