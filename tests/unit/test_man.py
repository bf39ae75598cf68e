"""The manual pages: generated ones match the commands, every page passes
``mandoc -T lint``, and rex(8) documents every command ``--help`` lists.

Regenerate after changing a command: ``python -m rexcarcer.cli.mangen``."""

from __future__ import annotations

import difflib
import re
import shutil
import subprocess
from functools import cache
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from rexcarcer.cli import mangen, mdoc
from rexcarcer.cli.main import build_cli
from tests.capability import require_tools

PAGES = sorted(p.name for p in mangen.MAN_DIR.iterdir() if re.fullmatch(r".+\.[58]", p.name))


def test_every_page_is_known_to_the_generator() -> None:
    assert sorted([*mangen.GENERATED, *mangen.HANDWRITTEN]) == PAGES


@cache
def _generated() -> dict[str, str]:
    return mangen.pages()


@pytest.mark.parametrize("name", mangen.GENERATED)
def test_generated_pages_match_the_commands(name: str) -> None:
    committed = (mangen.MAN_DIR / name).read_text()
    diff = difflib.unified_diff(
        committed.splitlines(), _generated()[name].splitlines(), lineterm=""
    )
    assert committed == _generated()[name], (
        f"{name} is stale: python -m rexcarcer.cli.mangen\n" + "\n".join(list(diff)[:40])
    )


def _mandoc() -> str:
    require_tools("mandoc")  # Debian package mandoc; scripts/setup installs it
    path = shutil.which("mandoc")
    assert path is not None
    return path


@pytest.mark.parametrize("name", PAGES)
def test_mandoc_lint_finds_nothing(name: str) -> None:
    done = subprocess.run(
        [_mandoc(), "-T", "lint", "-W", "warning", mangen.MAN_DIR / name],
        capture_output=True,
        text=True,
        check=False,
    )
    assert (done.returncode, done.stdout + done.stderr) == (0, "")


def test_mandoc_lint_is_not_blind(tmp_path: Path) -> None:
    """The lint test would see a broken page (a list never closed)."""
    bad = tmp_path / "bad.8"
    bad.write_text(".Dd November 30, 2026\n.Dt BAD 8\n.Os\n.Sh NAME\n.Nm bad\n.Nd x\n"
                   ".Sh DESCRIPTION\n.Bl -tag -width Ds\n.It x\ny\n")  # fmt: skip
    done = subprocess.run([_mandoc(), "-T", "lint", "-W", "warning", bad], capture_output=True)
    assert done.returncode != 0


def _listed(path: list[str]) -> list[list[str]]:
    """Every command path below ``path``, read from the ``--help`` text itself."""
    out = CliRunner().invoke(build_cli(), [*path[1:], "--help"]).output
    section = out.split("\nCommands:\n", 1)
    found = []
    for line in section[1].splitlines() if len(section) == 2 else []:
        if re.match(r"  \S", line):
            sub = [*path, line.split()[0]]
            found += [sub, *_listed(sub)]
    return found


def test_rex8_documents_every_command_help_lists() -> None:
    page = (mangen.MAN_DIR / "rex.8").read_text()
    commands = _listed(["rex"])
    assert len(commands) > 40 and ["rex", "completion"] in commands
    for path in commands:
        assert f".It Xo\n.Nm rex\n.Cm {' '.join(path[1:])}\n" in page, path


def test_every_option_of_every_command_is_in_rex8() -> None:
    page = (mangen.MAN_DIR / "rex.8").read_text()
    cli = build_cli()
    for path, cmd in mangen._visible(cli, ["rex"]):
        for param in cmd.params:
            if isinstance(param, click.Option) and param.name != "output":
                for opt in param.opts:
                    assert f"Fl {mdoc.arg(opt[1:])}" in page, (path, opt)


def test_environment_and_settings_come_from_the_settings_table() -> None:
    from rexcarcer.config import SETTINGS

    rex8 = (mangen.MAN_DIR / "rex.8").read_text()
    toml5 = (mangen.MAN_DIR / "rexcarcer.toml.5").read_text()
    for s in SETTINGS:
        assert f".It Ev {s.env}\n" in rex8
        assert f".It Va {s.key} Pq Ev {s.env}\n" in toml5


def test_exit_status_lists_every_error_code() -> None:
    from rexcarcer.errors import all_error_classes

    mangen._import_everything()
    page = (mangen.MAN_DIR / "rex.8").read_text()
    for cls in all_error_classes():
        if "exit_code" in vars(cls):
            assert f".It {cls.exit_code}\n" in page, cls


def test_help_text_markup() -> None:
    assert mdoc.inline("see `rex up`/`rex start`, then jail(8).") == [
        "see",
        ".Ql rex up Ns",
        ".Pf / Ql rex start ,",
        "then",
        ".Xr jail 8 .",
    ]
    assert mdoc.inline("(`a b`) and --host x. Next one.") == [
        ".Ql ( a b )",
        "and",
        ".Fl -host",
        "x.",
        "Next one.",
    ]
    assert mdoc.inline(".dot \\ and Fl") == ["\\&.dot \\e and Fl"]
    assert mdoc.args("Ar | x") == "\\&Ar \\&| x"
    assert mdoc.paragraphs("One.\n\n\b\nrex x\n  y\n\nTwo.") == [
        "One.",
        ".Bd -literal -offset 2n",
        "rex x",
        "  y",
        ".Ed",
        ".Pp",
        "Two.",
    ]
