"""The ``rex`` executable's front door: the commands that need neither click nor
the command tree are answered here, everything else goes to cli/main.py.

Python's own start is most of what a short ``rex`` command costs (docs/
performance.md), so this module imports only ``os`` and ``sys`` before it
knows which path it takes:

- ``rex [COMMAND...] --help`` (or ``-h``) prints the page cli/helpgen.py
  rendered with click ahead of time (cli/helptext.py), when the terminal is one
  of the widths rendered; any other width, or any option before ``--help``,
  goes to click.
- ``rex exec NAME -- COMMAND...`` and ``rex console NAME`` run by root, for
  a jail whose Linux init this host started (its run file, runtime/linux.py
  ``start``), enter the jail from this process (runtime/direct.py): no engine,
  store, agent or second interpreter between the user and the jail. Anything else (another host's
  jail, a stopped one, no run file, not root) goes to cli/main.py, which
  reports it as before.
- ``rex ls``, ``rex up FILE``, ``rex plan FILE`` and ``rex destroy NAME...`` in
  their plain forms go to this host's agent from cli/thin.py when one answers
  on its socket.

Each fast path prints and exits exactly as the click path does; the unit tests
run both and compare.
"""

from __future__ import annotations

import os
import sys

HELP = ("-h", "--help")
PROG = "rex"
HELP_WIDTH_MAX = 100  # main.py: context_settings max_content_width
THIN_VERBS = ("ls", "up", "plan", "destroy")  # cli/thin.py VERBS


def terminal_columns() -> int:
    """shutil.get_terminal_size().columns without importing shutil: $COLUMNS,
    else the terminal on standard output, else 80 (Lib/shutil.py)."""
    try:
        columns = int(os.environ["COLUMNS"])
    except (KeyError, ValueError):
        columns = 0
    if columns <= 0:
        try:
            columns = os.get_terminal_size(sys.__stdout__.fileno()).columns  # type: ignore[union-attr]
        except (AttributeError, ValueError, OSError):
            columns = 0
        columns = columns or 80
    return columns


def width_of(columns: int) -> int:
    """The text width click renders a help page at in a terminal of ``columns``:
    ``max(min(columns, max_content_width) - 2, 50)`` (click/formatting.py
    HelpFormatter; main.py sets max_content_width to 100)."""
    return max(min(columns, HELP_WIDTH_MAX) - 2, 50)


def help_page(argv: list[str], columns: int) -> str | None:
    """The pre-rendered page for ``rex ARGV``, when ARGV is a command path then
    ``--help`` or ``-h`` and the page exists at this terminal width."""
    if not argv or argv[-1] not in HELP or any(a.startswith("-") for a in argv[:-1]):
        return None
    from rexcarcer.cli.helptext import PAGES

    return PAGES.get((" ".join([PROG, *argv[:-1]]), width_of(columns)))


def exec_request(argv: list[str]) -> tuple[str, list[str]] | None:
    """(NAME, COMMAND) for exactly ``exec NAME -- COMMAND...`` (after ``--``
    click parses nothing, so no option of rex's can hide in COMMAND) or
    ``console NAME`` (the login shell service/local.py runs for it)."""
    if len(argv) >= 4 and argv[0] == "exec" and argv[2] == "--" and not argv[1].startswith("-"):
        return argv[1], argv[3:]
    if len(argv) == 2 and argv[0] == "console" and not argv[1].startswith("-"):
        from rexcarcer.runtime.direct import LOGIN_SHELL

        return argv[1], list(LOGIN_SHELL)
    return None


def main() -> None:
    argv = sys.argv[1:]
    if os.path.basename(sys.argv[0]) == PROG:
        page = help_page(argv, terminal_columns())
        if page is not None:
            sys.stdout.write(page)
            sys.stdout.flush()
            sys.exit(0)
    request = exec_request(argv)
    if request is not None and os.geteuid() == 0:
        _exec_here(*request)
    if any(a in THIN_VERBS for a in argv[:3]):
        from rexcarcer.cli.thin import main as thin

        thin(argv)  # exits when this host's agent answered
    from rexcarcer.cli.main import main as full

    full()


def state_root() -> str | None:
    """The state directory as config.py resolves it (``REX_ROOT`` beats the
    file, the file beats the default), reading the TOML file only when there
    is one; None when config.py should say what is wrong."""
    env = os.environ.get("REX_ROOT")
    if env is not None:
        return os.path.abspath(env) if env else None
    from rexcarcer.platform.defaults import DEFAULTS, this_os

    defaults = DEFAULTS[this_os()]
    for candidate in (os.path.join(defaults["root"], "rexcarcer.toml"), defaults["config_file"]):
        try:
            found = os.path.isfile(candidate)
        except OSError:
            found = False
        if found:  # it may set root: config.py reads it as every other command does
            from rexcarcer.config import load_config
            from rexcarcer.errors import RexError

            try:
                return str(load_config().root)
            except RexError:
                return None
    return os.path.abspath(defaults["root"])


def _exec_here(name: str, command: list[str]) -> None:
    """Enter the jail and exit with its command's status, or return when the
    jail is not one this host runs (cli/main.py then does what it always did)."""
    root = state_root()
    if root is None:
        return
    from rexcarcer.runtime.direct import enter_if_local

    try:
        enter_if_local(os.path.join(root, "run"), name, command)
    except Exception as exc:
        from rexcarcer.errors import RexError  # only now: the path that enters never needs it

        if not isinstance(exc, RexError):
            raise
        sys.stderr.write(f"error: {exc.message}\n" + (f"hint: {exc.hint}\n" if exc.hint else ""))
        sys.exit(exc.exit_code)
