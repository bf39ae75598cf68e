"""Transfer progress: quiet lines off a terminal, a rich bar on one."""

from __future__ import annotations

from dataclasses import dataclass, field

from rexcarcer.base.progress import LineTransfer, RichTransfer, human, transfer_for
from rexcarcer.progress import QuietProgress


@dataclass
class Console(QuietProgress):
    tty: bool = False
    quiet: bool = False
    lines: list[str] = field(default_factory=list)


def test_quiet_lines() -> None:
    progress = QuietProgress()
    t = LineTransfer(progress, interval=0)
    t.start("downloading fb.zfs.bz2", 4 << 20, done=1 << 20)
    t.advance(1 << 20)
    t.finish()
    assert progress.lines[0] == "downloading fb.zfs.bz2 (4.0 MiB, resuming at 1.0 MiB)"
    assert progress.lines[1].startswith("downloading fb.zfs.bz2:  50% 2.0 MiB ")
    assert progress.lines[2].startswith("downloading fb.zfs.bz2: 2.0 MiB in ")


def test_few_lines_by_default() -> None:
    progress = QuietProgress()
    t = LineTransfer(progress)
    t.start("x", None)
    for _ in range(1000):
        t.advance(1000)
    t.finish()
    assert len(progress.lines) == 2 and progress.lines[0] == "x (size unknown)"


def test_which_transfer() -> None:
    assert isinstance(transfer_for(QuietProgress()), LineTransfer)
    assert isinstance(transfer_for(Console(tty=True)), RichTransfer)
    assert isinstance(transfer_for(Console(tty=True, quiet=True)), LineTransfer)


def test_rich_bar_runs() -> None:
    t = RichTransfer()
    t.start("downloading x", 100)
    t.advance(50)
    t.advance(50)
    t.finish()


def test_human() -> None:
    assert [human(n) for n in (0, 1023, 1024, 5 << 20, 3 << 30, 5 << 40)] == [
        "0 B", "1023 B", "1.0 KiB", "5.0 MiB", "3.0 GiB", "5120.0 GiB",
    ]  # fmt: skip
