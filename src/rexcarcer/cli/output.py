"""Progress and tables for the terminal (stderr for progress, stdout for data).

Colour and terminal control sequences go only to a terminal, and never when
``NO_COLOR`` is set to anything but the empty string (https://no-color.org);
otherwise progress is plain lines, for logs and pipes.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Mapping, Sequence
from typing import TextIO

import click


def ansi_ok(stream: TextIO, environ: Mapping[str, str] | None = None) -> bool:
    """Whether ``stream`` may receive colour and cursor control: a terminal, and
    no ``NO_COLOR``."""
    env = os.environ if environ is None else environ
    if env.get("NO_COLOR", ""):
        return False
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # a closed or odd stream
        return False


class ConsoleProgress:
    """Steps as ``==> message`` with elapsed time; command output indented.

    ``tty``: stderr may be drawn on (bold steps here, a transfer bar in
    base/progress.py); else every line is plain text."""

    def __init__(self, *, quiet: bool = False) -> None:
        self.quiet = quiet
        self.t0 = time.monotonic()
        self.tty = ansi_ok(sys.stderr)

    def step(self, message: str) -> None:
        if self.quiet:
            return
        elapsed = f"[{time.monotonic() - self.t0:6.2f}s]"
        line = f"==> {message}"
        # color=False: click would keep a style on a terminal even under NO_COLOR
        styled = click.style(line, bold=True) if self.tty else line
        click.echo(f"{elapsed} {styled}", err=True, color=self.tty)

    def output(self, line: str) -> None:
        if not self.quiet:
            click.echo("    | " + line.rstrip("\n"), err=True)


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(c)) for w, c in zip(widths, row, strict=True)]
    lines = ["  ".join(h.upper().ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    for row in rows:
        lines.append("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
    return "\n".join(lines)
