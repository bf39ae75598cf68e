"""The manual pages, generated from the CLI itself and the settings table.

    python -m rexcarcer.cli.mangen            # rewrite src/rexcarcer/man/*.[58]
    python -m rexcarcer.cli.mangen --check    # exit 1 if a page is stale

rex(8), rex-agent(8) and rexcarcer.toml(5) are hand-written mdoc(7) templates
(``src/rexcarcer/man/PAGE.in``) whose ``@NAME@`` lines are filled here: every
command and option from the click tree, ENVIRONMENT and rexcarcer.toml(5) from
``config.SETTINGS``, EXIT STATUS from the error tree. rex.rex(5) is written by
hand. A unit test regenerates the pages and compares, and runs
``mandoc -T lint`` on each, so the pages never drift from the commands.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import re
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import click

from rexcarcer.cli import mdoc

MAN_DIR = Path(__file__).resolve().parents[1] / "man"
GENERATED = ("rex.8", "rex-agent.8", "rexcarcer.toml.5")
HANDWRITTEN = ("rex.rex.5",)
_PLACEHOLDER = re.compile(r"@([A-Z_]+)@")

# Statuses that are not an error class's: the CLI's own (main.py) and rex doctor's.
_OTHER_STATUS = {
    0: "Success.",
    1: "A check failed: `rex doctor` found a problem, `rex dns check --dry-run` found drift.",
    3: "An error without a more specific status.",
    130: "Interrupted (SIGINT) or aborted.",
    143: "Terminated by SIGTERM.",
}


def _visible(cmd: click.Command, path: list[str]) -> Iterator[tuple[list[str], click.Command]]:
    """Every command below ``cmd`` (itself included), sorted, hidden ones left out."""
    yield path, cmd
    if isinstance(cmd, click.Group):
        for name in sorted(cmd.commands):
            sub = cmd.commands[name]
            if not sub.hidden:
                yield from _visible(sub, [*path, name])


def _value(opt: click.Option) -> str:
    """What follows the option's name: ``Ar file``, ``Cm text | json`` or nothing."""
    if opt.is_flag or opt.count:
        return ""
    kind = opt.type
    if isinstance(kind, click.Choice):
        return "Cm " + " | ".join(mdoc.arg(str(c)) for c in kind.choices)
    if opt.metavar:
        word = opt.metavar.lower()
    elif isinstance(kind, click.Path):
        word = "directory" if not kind.file_okay else "file" if not kind.dir_okay else "path"
    elif isinstance(kind, click.types.IntParamType | click.types.FloatParamType):
        word = "number"
    else:
        word = max(opt.opts, key=len).lstrip("-")
    return "Ar " + mdoc.arg(word)


def _flag(name: str) -> str:
    return "Fl " + mdoc.arg(name[1:])


def _names(opt: click.Option) -> list[str]:
    """Short names first; click 8.1 builds the help option's names from a set,
    so their order would change from one run to the next."""
    return sorted(opt.opts, key=lambda o: o.startswith("--"))


def _options(cmd: click.Command) -> list[click.Option]:
    # -o/--output is added to every command by main.py: documented once, globally
    return [
        p for p in cmd.params
        if isinstance(p, click.Option) and not p.hidden and p.name != "output"
    ]  # fmt: skip


def _synopsis_words(cmd: click.Command) -> list[str]:
    """Macro lines after ``.Nm rex Cm VERB``: options, then arguments."""
    lines = []
    for opt in _options(cmd):
        names = [_flag(_names(opt)[0])] + [_flag(o) for o in opt.secondary_opts]
        words = " | ".join(names) + (" " + _value(opt) if _value(opt) else "")
        lines.append(f".{words}" if opt.required else f".Op {words}")
    for param in cmd.params:
        if isinstance(param, click.Argument):
            name = "Ar " + mdoc.arg(param.human_readable_name)
            name += " ..." if param.nargs == -1 else ""
            lines.append(f".{name}" if param.required else f".Op {name}")
    return lines


def _default(opt: click.Option) -> str:
    if not opt.show_default or opt.default in (None, ""):
        return ""
    if opt.is_flag:  # a --x/--no-x pair names the default; a lone flag is off
        if not opt.secondary_opts:
            return ""
        return f" Default: `{max(opt.opts if opt.default else opt.secondary_opts, key=len)}`."
    return f" Default: `{opt.default}`."


def _option_items(options: Sequence[click.Option]) -> list[str]:
    if not options:
        return []
    out = [".Bl -tag -width Ds"]
    for opt in options:
        heads = " , ".join(_flag(o) for o in [*_names(opt), *opt.secondary_opts])
        value = _value(opt)
        out.append(f".It {heads}" + (f" {value}" if value else ""))
        help_text = (opt.help or "") + _default(opt)
        out += mdoc.inline(help_text) if help_text else []
        for env in [opt.envvar] if isinstance(opt.envvar, str) else opt.envvar or []:
            out += ["The environment variable", f".Ev {env}", "sets it too."]
    return [*out, ".El"]


def _entry(path: list[str], cmd: click.Command) -> list[str]:
    head = [".It Xo", ".Nm rex", ".Cm " + " ".join(mdoc.arg(p) for p in path[1:])]
    if isinstance(cmd, click.Group):
        head.append(".Ar command ...")
    else:
        head += _synopsis_words(cmd)
    body = mdoc.paragraphs(cmd.help or cmd.short_help or "")
    if isinstance(cmd, click.Group):
        subs = ", ".join(sorted(n for n, c in cmd.commands.items() if not c.hidden))
        body += [".Pp", f"Commands: {mdoc.text_line(subs)}."]
    options = _option_items(_options(cmd))
    return [*head, ".Xc", *body, *options]


def _cli() -> click.Group:
    from rexcarcer.cli.main import build_cli

    return build_cli()


def commands() -> list[str]:
    """``.Sh COMMANDS``: every command and subcommand, with its options."""
    out = [".Bl -tag -width Ds"]
    for path, cmd in _visible(_cli(), ["rex"]):
        if len(path) > 1:
            out += _entry(path, cmd)
    return [*out, ".El"]


def _global_params() -> list[click.Option]:
    cli = _cli()
    ctx = click.Context(cli, info_name="rex", help_option_names=["-h", "--help"])
    return [p for p in cli.get_params(ctx) if isinstance(p, click.Option) and not p.hidden]


def global_synopsis() -> list[str]:
    out = []
    for opt in _global_params():
        if opt.is_eager:  # --help, --version: a synopsis line of their own
            continue
        value = _value(opt)
        out.append(f".Op {_flag(_names(opt)[0])}" + (f" {value}" if value else ""))
    return [*out, ".Ar command", ".Op Ar argument ..."]


def global_options() -> list[str]:
    return _option_items(_global_params())


def agent_synopsis() -> list[str]:
    return _synopsis_words(_cli().commands["agent"])


def agent_options() -> list[str]:
    return _option_items(_options(_cli().commands["agent"]))


def _sentence(doc: str) -> str:
    doc = doc.strip()
    return doc + ("" if doc.endswith(".") else ".")


def environment() -> list[str]:
    from rexcarcer.config import SETTINGS

    width = max(SETTINGS, key=lambda s: len(s.env)).env
    out = [f".Bl -tag -width {width}"]
    for s in SETTINGS:
        out += [f".It Ev {s.env}", *mdoc.inline(_sentence(s.doc))]
        out += ["Setting", f".Va {s.key}", "in", ".Xr rexcarcer.toml 5 ."]
    return [*out, ".El"]


def settings() -> list[str]:
    from rexcarcer.config import SETTINGS

    out = [".Bl -tag -width Ds"]
    for s in SETTINGS:
        out += [f".It Va {s.key} Pq Ev {s.env}", *mdoc.inline(_sentence(s.doc))]
    return [*out, ".El"]


def _import_everything() -> None:
    """Feature packages define their error classes beside their code."""
    import rexcarcer

    for mod in pkgutil.walk_packages(rexcarcer.__path__, "rexcarcer."):
        if not mod.name.endswith("__main__"):
            importlib.import_module(mod.name)


def _tree_descriptions() -> dict[str, str]:
    """``Name (code)   text`` lines of the tree drawn in errors.py's docstring."""
    from rexcarcer import errors

    found = re.findall(r"(\w+) \((?:exit )?\d+\) +(\S.*)", errors.__doc__ or "")
    return {name: text.strip() for name, text in found}


def _describe(cls: type) -> str:
    tree = _tree_descriptions()
    if cls.__name__ in tree:
        return _sentence(tree[cls.__name__])
    doc = inspect.cleandoc(vars(cls).get("__doc__") or "").split("\n\n")[0]
    first = re.split(r"(?<=\.)\s|;\s", " ".join(doc.split()))[0]
    first = re.sub(r"\s*\(exit \d+\)", "", first).replace("``", "`")
    return _sentence(first) if first else cls.__name__


def exit_status() -> list[str]:
    from rexcarcer.errors import all_error_classes

    _import_everything()
    rows: dict[int, list[str]] = {code: mdoc.inline(t) for code, t in _OTHER_STATUS.items()}
    for cls in all_error_classes():
        code = vars(cls).get("exit_code")
        if isinstance(code, int) and code not in _OTHER_STATUS:
            rows[code] = [*mdoc.inline(_describe(cls).rstrip(".")), f".Pq Dv {cls.__name__} ."]
    out = [".Bl -tag -width Ds"]
    for code in sorted(rows):
        out += [f".It {code}", *rows[code]]
    return [*out, ".El"]


FILLERS: dict[str, Callable[[], list[str]]] = {
    "GLOBAL_SYNOPSIS": global_synopsis,
    "GLOBAL_OPTIONS": global_options,
    "COMMANDS": commands,
    "ENVIRONMENT": environment,
    "EXIT_STATUS": exit_status,
    "AGENT_SYNOPSIS": agent_synopsis,
    "AGENT_OPTIONS": agent_options,
    "SETTINGS": settings,
}


def fill(template: str) -> str:
    """The template with each ``@NAME@`` line replaced by its generated lines."""
    out: list[str] = []
    for line in template.splitlines():
        m = _PLACEHOLDER.fullmatch(line)
        if m is None:
            out.append(line)
        elif m.group(1) in FILLERS:
            out += FILLERS[m.group(1)]()
        else:
            raise KeyError(f"unknown placeholder {line} (known: {', '.join(FILLERS)})")
    return "\n".join(out) + "\n"


def pages() -> dict[str, str]:
    """Every generated page: file name -> mdoc text."""
    return {name: fill((MAN_DIR / f"{name}.in").read_text()) for name in GENERATED}


def main(argv: Sequence[str]) -> int:
    stale = []
    for name, text in pages().items():
        path = MAN_DIR / name
        if path.exists() and path.read_text() == text:
            continue
        stale.append(name)
        if "--check" not in argv:
            path.write_text(text)
    verb = "stale" if "--check" in argv else "written"
    for name in stale:
        print(f"{MAN_DIR / name}: {verb}", file=sys.stderr)
    return 1 if stale and "--check" in argv else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
