"""Progress and tables for the terminal (stderr for progress, stdout for data).

Colour and terminal control sequences go only to a terminal, and never when
``NO_COLOR`` is set to anything but the empty string (https://no-color.org);
otherwise progress is plain lines, for logs and pipes.
"""

from __future__ import annotations

import os
import sys
import time

TYPE_CHECKING = False  # typing itself costs milliseconds (it imports re); mypy knows this name
if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence
    from typing import TextIO

# Without click: the front door's thin client (cli/thin.py) draws an agent's
# progress with this class, and click alone costs more than Python's start.
BOLD, RESET = "\x1b[1m", "\x1b[0m"  # what click.style(bold=True) writes


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
        # only on a terminal without NO_COLOR (click.echo's color=self.tty before)
        styled = f"{BOLD}{line}{RESET}" if self.tty else line
        _echo_err(f"{elapsed} {styled}", keep_ansi=self.tty)

    def output(self, line: str) -> None:
        if not self.quiet:
            _echo_err("    | " + line.rstrip("\n"), keep_ansi=_isatty(sys.stderr))


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def strip_ansi(text: str) -> str:
    """``text`` without terminal control sequences (click's strip_ansi, whose
    pattern this is: click/_compat.py ``_ansi_re``)."""
    import re

    return re.sub(r"\033\[[;?0-9]*[a-zA-Z]", "", text)


def _echo_err(text: str, *, keep_ansi: bool) -> None:
    """A line on stderr as click.echo(err=True) wrote it: control sequences
    kept only for a terminal (a build step's output is the jail's words)."""
    if not keep_ansi and "\x1b" in text:
        text = strip_ansi(text)
    sys.stderr.write(text + "\n")
    sys.stderr.flush()


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(c)) for w, c in zip(widths, row, strict=True)]
    lines = ["  ".join(h.upper().ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    for row in rows:
        lines.append("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
    return "\n".join(lines)
