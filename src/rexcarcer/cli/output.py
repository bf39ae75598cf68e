"""Progress and tables for the terminal (stderr for progress, stdout for data)."""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence

import click


class ConsoleProgress:
    """Steps as ``==> message`` with elapsed time; command output indented."""

    def __init__(self, *, quiet: bool = False) -> None:
        self.quiet = quiet
        self.t0 = time.monotonic()
        self.tty = sys.stderr.isatty()

    def step(self, message: str) -> None:
        if self.quiet:
            return
        elapsed = f"[{time.monotonic() - self.t0:6.2f}s]"
        line = f"==> {message}"
        click.echo(f"{elapsed} {click.style(line, bold=True) if self.tty else line}", err=True)

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
