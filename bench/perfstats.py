"""Pure helpers of bench_perf.py: goals, summaries, the tables it prints.

Nothing here runs a process or reads the clock; tests/unit/test_bench_perfstats.py
checks it.
"""

from __future__ import annotations

import contextlib
import statistics
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum


class GoalKind(StrEnum):
    RATIO = "ratio"  # median <= limit x the reference's median
    DELTA = "delta"  # median <= the reference's median + limit seconds
    ABSOLUTE = "absolute"  # median <= limit seconds


@dataclass(frozen=True, slots=True)
class Goal:
    kind: GoalKind
    limit: float  # a factor for RATIO, seconds otherwise
    of: str = "floor"  # what the reference is called in the table

    def text(self) -> str:
        if self.kind is GoalKind.RATIO:
            return f"<= {self.limit:g}x {self.of}"
        if self.kind is GoalKind.DELTA:
            return f"<= {self.of} + {duration(self.limit)}"
        return f"<= {duration(self.limit)}"

    def versus(self, value: float, ref: float | None) -> str:
        """How ``value`` (a median) compares with the reference's median."""
        if self.kind is GoalKind.ABSOLUTE or ref is None:
            return ""
        if self.kind is GoalKind.DELTA:
            return f"+{duration(value - ref)}" if value >= ref else f"-{duration(ref - value)}"
        return f"{value / ref:.2f}x" if ref > 0 else ""

    def met(self, value: float, ref: float | None) -> bool | None:
        """None when it cannot be decided (no reference measured)."""
        if self.kind is GoalKind.ABSOLUTE:
            return value <= self.limit
        if ref is None:
            return None
        if self.kind is GoalKind.DELTA:
            return value <= ref + self.limit
        return value <= self.limit * ref


def duration(seconds: float) -> str:
    """3.2 ms, 480 ms, 52.1 s: three significant figures at most, never less than
    a tenth of a millisecond."""
    ms = seconds * 1000
    if abs(ms) < 100:
        return f"{ms:.1f} ms"
    if abs(ms) < 10_000:
        return f"{ms:.0f} ms"
    return f"{seconds:.1f} s"


def median(xs: Sequence[float]) -> float:
    return statistics.median(xs)


def worst(xs: Sequence[float]) -> float:
    return max(xs)


@dataclass(frozen=True, slots=True)
class Row:
    """One line of the main table. ``this`` and ``baseline`` are the samples
    (seconds) of the rex under test and of the --baseline one; ``ref`` those of
    the floor the goal compares with. ``note`` replaces the figures (a peer
    that is not installed)."""

    what: str
    agent: str = "-"  # "no", "yes", or "-" for what is not rex
    this: Sequence[float] = ()
    baseline: Sequence[float] = ()
    ref: Sequence[float] = ()
    goal: Goal | None = None
    note: str = ""
    ref_name: str = "floor"  # how a ratio to ``ref`` without a goal is labelled


def _versus(row: Row, xs: Sequence[float]) -> tuple[str, str]:
    """How the median of ``xs`` compares with the row's reference, and whether
    it meets the row's goal."""
    if not xs:
        return "", ""
    ref = median(row.ref) if row.ref else None
    if row.goal is None:
        return (f"{median(xs) / ref:.2f}x {row.ref_name}" if ref else ""), ""
    met = row.goal.met(median(xs), ref)
    return row.goal.versus(median(xs), ref), {True: "yes", False: "NO", None: "?"}[met]


def main_table(rows: Iterable[Row], with_baseline: bool) -> list[str]:
    head = ["what", "agent", "median", "worst"]
    if with_baseline:
        head += ["baseline median", "baseline worst", "baseline/this"]
    head += ["vs reference", "goal", "met"]
    body = []
    for row in rows:
        cells = [row.what, row.agent]
        if row.note:
            cells += [row.note, ""] + (["", "", ""] if with_baseline else [])
            body.append([*cells, "", "", ""])
            continue
        cells += _pair(row.this)
        vs, met = _versus(row, row.this)
        if with_baseline:
            cells += _pair(row.baseline)
            both = row.this and row.baseline and median(row.this) > 0
            cells.append(f"{median(row.baseline) / median(row.this):.2f}x" if both else "")
            bvs, bmet = _versus(row, row.baseline)
            vs = f"{vs} / {bvs}" if bvs else vs
            met = f"{met} / {bmet}" if bmet else met
        cells += [vs, row.goal.text() if row.goal else "", met]
        body.append(cells)
    return markdown(head, body)


def _pair(xs: Sequence[float]) -> list[str]:
    if not xs:
        return ["", ""]
    if len(xs) == 1:
        return [duration(xs[0]), "(n=1)"]
    return [duration(median(xs)), duration(worst(xs))]


@dataclass
class ScalePoint:
    """The growth table's figures at one jail count, for one agent mode: samples
    in seconds per side ("this", "baseline"), the agent's RSS in bytes."""

    jails: int
    agent: bool
    up: dict[str, list[float]] = field(default_factory=dict)
    ls: dict[str, list[float]] = field(default_factory=dict)
    dns: dict[str, list[float]] = field(default_factory=dict)
    rss: dict[str, int] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)  # why a figure is missing


def scale_table(points: Iterable[ScalePoint], sides: Sequence[str]) -> list[str]:
    def cell(samples: Mapping[str, Sequence[float]], fmt: Callable[[Sequence[float]], str],
             key: str, p: ScalePoint) -> str:  # fmt: skip
        parts = []
        for side in sides:
            xs = samples.get(side)
            parts.append(fmt(xs) if xs else p.notes.get(f"{key}:{side}", "-"))
        return " / ".join(parts)

    def med_worst(xs: Sequence[float]) -> str:
        return f"{duration(median(xs))} ({duration(worst(xs))})"

    def mib(side: str, p: ScalePoint) -> str:
        return f"{p.rss[side] / 2**20:.1f} MiB" if side in p.rss else "-"

    head = ["jails", "agent", "rex up", "rex ls", "DNS publish", "agent RSS"]
    body = []
    for p in points:
        rss = " / ".join(mib(s, p) for s in sides) if p.agent else "-"
        body.append([
            str(p.jails), "yes" if p.agent else "no",
            cell(p.up, med_worst, "up", p), cell(p.ls, med_worst, "ls", p),
            cell(p.dns, med_worst, "dns", p), rss,
        ])  # fmt: skip
    return markdown(head, body)


def markdown(head: Sequence[str], body: Sequence[Sequence[str]]) -> list[str]:
    """A pipe table whose columns line up in a terminal too."""
    widths = [max(len(r[i]) for r in [head, *body]) for i in range(len(head))]

    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"

    return [line(head), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(line, body)]


def scale_points(max_jails: int, steps: Sequence[int] = (10, 50, 100, 200, 500)) -> list[int]:
    """The jail counts of the growth table: the standard steps up to
    ``max_jails``, and ``max_jails`` itself."""
    out = [n for n in steps if n < max_jails]
    return [*out, max_jails] if max_jails >= 1 else out


def shares(total: int, parts: int) -> list[int]:
    """``total`` split into ``parts`` nearly equal counts (the larger first)."""
    return [total // parts + (i < total % parts) for i in range(parts)]


def interpreter(script_head: bytes) -> str | None:
    """The Python a console script runs under: its ``#!`` line, when that names
    a python executable (pip writes ``#!/path/.venv/bin/python3``)."""
    first = script_head.split(b"\n", 1)[0]
    if not first.startswith(b"#!"):
        return None
    words = first[2:].decode(errors="replace").split()
    if not words:
        return None
    prog = words[1] if words[0].endswith("/env") and len(words) > 1 else words[0]
    return prog if prog.rsplit("/", 1)[-1].startswith("python") else None


def proc_status_bytes(status: str, key: str = "VmRSS") -> int | None:
    """``VmRSS:   41236 kB`` in /proc/PID/status (proc(5)), in bytes."""
    for line in status.splitlines():
        name, _, value = line.partition(":")
        if name == key:
            number, _, unit = value.strip().partition(" ")
            if unit.strip() == "kB" and number.isdigit():
                return int(number) * 1024
    return None


@dataclass
class Programs:
    """What ``strace -f -q -tt -e trace=execve`` saw one command run."""

    total: float | None = None  # from the command's exec to its exit, seconds
    count: dict[str, int] = field(default_factory=dict)  # program -> how many ran
    spent: dict[str, float] = field(default_factory=dict)  # program -> seconds, exec to exit


def _clock(stamp: str) -> float:
    h, m, sec = stamp.split(":")
    return int(h) * 3600 + int(m) * 60 + float(sec)


def exec_profile(strace_text: str) -> Programs:
    """Programs started (the basename of each successful execve) and how long
    each ran, from its exec to its exit; the first process is the command
    itself and is not counted. A process that never exited (a jail's init)
    counts but adds no time."""
    started: dict[str, tuple[str, float]] = {}  # pid -> (program, exec time)
    out = Programs()
    first = ""
    for line in strace_text.splitlines():
        words = line.split(None, 2)
        if len(words) < 3 or not words[0].isdigit():
            continue
        pid, when, rest = words[0], _clock(words[1]), words[2]
        first = first or pid
        if rest.startswith('execve("') and rest.rstrip().endswith("= 0"):
            started[pid] = (rest[8 : rest.index('"', 8)].rsplit("/", 1)[-1], when)
        elif rest.startswith(("+++ exited", "+++ killed")) and pid in started:
            name, t0 = started.pop(pid)
            if pid == first:
                out.total = when - t0
            else:
                out.count[name] = out.count.get(name, 0) + 1
                out.spent[name] = out.spent.get(name, 0.0) + when - t0
    for pid, (name, _) in started.items():
        if pid != first:
            out.count[name] = out.count.get(name, 0) + 1
    out.count = dict(sorted(out.count.items(), key=lambda kv: (-kv[1], kv[0])))
    return out


def import_times(importtime_text: str, top: int = 8) -> tuple[float, list[tuple[str, float]]]:
    """``python -X importtime`` output: the time all imports took (seconds: the
    sum of their own times) and the packages that took most, each with the own
    times of all its modules summed (``rexcarcer.cli.main`` counts for
    ``rexcarcer``)."""
    total = 0.0
    by_package: dict[str, float] = {}
    for line in importtime_text.splitlines():
        fields = line.partition("import time:")[2].split("|")
        if len(fields) != 3 or not fields[0].strip().isdigit():
            continue  # the header, or another line on standard error
        own = int(fields[0]) / 1e6
        package = fields[2].strip().split(".")[0]
        by_package[package] = by_package.get(package, 0.0) + own
        total += own
    ranked = sorted(by_package.items(), key=lambda kv: -kv[1])[:top]
    return total, ranked


def progress_steps(stderr: str) -> list[tuple[float, str]]:
    """The ``[  0.06s] ==> Cloning ...`` lines of rex's progress (cli/output.py):
    seconds since the CLI set up its progress, and the step."""
    out = []
    for line in stderr.splitlines():
        stamp, sep, step = line.partition("s] ==> ")
        if sep and stamp.startswith("["):
            with contextlib.suppress(ValueError):
                out.append((float(stamp[1:]), step.strip()))
    return out
