"""``docs/cli.md``: every command's ``--help``, generated from the CLI itself.

    python -m rexcarcer.cli.docgen > docs/cli.md

A unit test regenerates it and compares, so the reference never drifts from
the commands.
"""

from __future__ import annotations

import click

HEADER = """# Command reference

Generated from `rex ... --help` by `python -m rexcarcer.cli.docgen > docs/cli.md`;
a unit test checks that it matches the commands. Every command that prints data
takes `-o json` (before or after the verb).
"""


def _walk(cmd: click.Command, path: list[str]) -> list[tuple[list[str], click.Command]]:
    out = [(path, cmd)]
    if isinstance(cmd, click.Group):
        for name in sorted(cmd.commands):
            out += _walk(cmd.commands[name], [*path, name])
    return out


def render() -> str:
    from rexcarcer.cli.main import build_cli

    parts = [HEADER]
    for path, cmd in _walk(build_cli(), ["rex"]):
        ctx = click.Context(cmd, info_name=" ".join(path), terminal_width=100,
                            max_content_width=100, help_option_names=["-h", "--help"])  # fmt: skip
        parts.append(f"\n## `{' '.join(path)}`\n\n```\n{cmd.get_help(ctx).rstrip()}\n```\n")
    return "".join(parts)


if __name__ == "__main__":
    print(render(), end="")
