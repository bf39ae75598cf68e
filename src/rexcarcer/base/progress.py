"""Transfer progress: a rich bar (bytes, rate, ETA) on a terminal, a few quiet
lines otherwise. The engine reports through a ``Transfer``; which one is drawn
follows the host's ``Progress`` (its ``tty`` and ``quiet``, when it has them)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Protocol

from rexcarcer.progress import Progress

if TYPE_CHECKING:
    from rich.progress import Progress as RichProgress
    from rich.progress import TaskID

LINE_INTERVAL = 5.0  # seconds between quiet progress lines


class Transfer(Protocol):
    def start(self, label: str, total: int | None, done: int = 0) -> None:
        """A transfer of ``total`` bytes (None: unknown) begins, ``done`` already there."""
        ...

    def advance(self, n: int) -> None: ...

    def finish(self) -> None: ...


def human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


class LineTransfer:
    """Start, a line every few seconds, done: for logs and pipes."""

    def __init__(self, progress: Progress, interval: float = LINE_INTERVAL) -> None:
        self.progress = progress
        self.interval = interval
        self.label = ""
        self.total: int | None = None
        self.done = self.first = 0
        self.t0 = self.last = 0.0

    def start(self, label: str, total: int | None, done: int = 0) -> None:
        self.label, self.total, self.done, self.first = label, total, done, done
        self.t0 = self.last = time.monotonic()
        size = human(total) if total is not None else "size unknown"
        resumed = f", resuming at {human(done)}" if done else ""
        self.progress.output(f"{label} ({size}{resumed})")

    def advance(self, n: int) -> None:
        self.done += n
        t = time.monotonic()
        if t - self.last >= self.interval:
            self.last = t
            pct = f" {100 * self.done / self.total:3.0f}%" if self.total else ""
            self.progress.output(f"{self.label}:{pct} {human(self.done)} {self._rate(t)}")

    def _rate(self, t: float) -> str:
        return f"{human((self.done - self.first) / max(t - self.t0, 1e-6))}/s"

    def finish(self) -> None:
        t = time.monotonic()
        self.progress.output(
            f"{self.label}: {human(self.done)} in {t - self.t0:.1f} s ({self._rate(t)})"
        )


class RichTransfer:
    """A bar with bytes, rate and ETA on stderr (imports rich only when used)."""

    def __init__(self) -> None:
        self._bar: RichProgress | None = None
        self._task: TaskID | None = None

    def start(self, label: str, total: int | None, done: int = 0) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
            TransferSpeedColumn,
        )

        self._bar = Progress(
            TextColumn("{task.description}"), BarColumn(), DownloadColumn(),
            TransferSpeedColumn(), TimeRemainingColumn(), console=Console(stderr=True),
        )  # fmt: skip
        self._bar.start()
        self._task = self._bar.add_task(label, total=total, completed=done)

    def advance(self, n: int) -> None:
        if self._bar is not None and self._task is not None:
            self._bar.advance(self._task, n)

    def finish(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None


def transfer_for(progress: Progress) -> Transfer:
    """A bar when the host's progress draws on a terminal, quiet lines otherwise."""
    if getattr(progress, "quiet", False):
        return LineTransfer(progress, interval=float("inf"))
    if getattr(progress, "tty", False):
        return RichTransfer()
    return LineTransfer(progress)
