"""Pure helpers of bench_update.py and bench_move.py: the prober's samples, the
outage they show, sizes and the tables.

Nothing here runs a process or reads the clock; tests/unit/test_bench_probestats.py
checks it.
"""

from __future__ import annotations

import itertools
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

FAILED = "!"  # what the prober writes for a probe that got no page


@dataclass(frozen=True, slots=True)
class Sample:
    t: float  # CLOCK_MONOTONIC seconds, when the answer (or the failure) came
    body: str  # the page, stripped, or FAILED


@dataclass(frozen=True, slots=True)
class Outage:
    last_old: float  # the last answer with the old page
    first_new: float  # the first answer with the new page after it
    failed: int  # probes in between that got no page (or another one)

    @property
    def downtime(self) -> float:
        return self.first_new - self.last_old


def parse_samples(text: str) -> list[Sample]:
    """The prober's lines, ``MONOTONIC BODY``; anything else (its "ready", a line
    cut short by the kill that stopped it) is skipped."""
    out = []
    for line in text.splitlines():
        t, sep, body = line.partition(" ")
        if not sep or not body:
            continue
        try:
            out.append(Sample(float(t), body))
        except ValueError:
            continue
    return out


def outage(samples: Sequence[Sample], old: str, new: str, since: float) -> Outage:
    """The switch from ``old`` to ``new`` after ``since``: from the last answer
    with ``old`` to the first answer with ``new`` after the first probe (at or
    after ``since``) that did not get ``old``. ``old == new`` measures a gap:
    a page served, lost, and served again. Raises ValueError when the samples
    do not show the switch (yet)."""
    after = [s for s in samples if s.t >= since]
    first_other = next((i for i, s in enumerate(after) if s.body != old), None)
    if first_other is None:
        raise ValueError(f"no probe after {since:.3f} missed {old!r}")
    first_new = next((i for i in range(first_other, len(after)) if after[i].body == new), None)
    if first_new is None:
        raise ValueError(f"{new!r} not served after {old!r} was lost")
    last_old = next((i for i in range(first_new - 1, -1, -1) if after[i].body == old), None)
    if last_old is None:
        raise ValueError(f"{old!r} never answered after {since:.3f}")
    return Outage(after[last_old].t, after[first_new].t, first_new - last_old - 1)


def intervals(samples: Sequence[Sample]) -> list[float]:
    """Time between consecutive probes: the resolution of every figure."""
    return [b.t - a.t for a, b in itertools.pairwise(samples)]


def parse_size(text: str) -> int:
    """``100M``, ``1G``, ``512K`` or bytes; binary units, as dd and zfs use them."""
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    text = text.strip().upper().removesuffix("B").removesuffix("I")
    factor = units.get(text[-1:], 1)
    number = text[:-1] if text[-1:] in units else text
    value = int(float(number) * factor)
    if value <= 0:
        raise ValueError(f"not a size: {text!r}")
    return value


def size_text(n: int) -> str:
    for unit, factor in (("G", 1 << 30), ("M", 1 << 20), ("K", 1 << 10)):
        if n >= factor and n % factor == 0:
            return f"{n // factor}{unit}"
    return f"{n}"


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms" if abs(seconds) >= 0.1 else f"{seconds * 1000:.1f} ms"


def row(what: str, xs: Sequence[float]) -> list[str]:
    """One table row: what, n, median, worst (none when nothing was measured)."""
    if not xs:
        return [what, "0", "-", "-"]
    return [what, str(len(xs)), ms(statistics.median(xs)), ms(max(xs))]


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """A Markdown table, columns padded to their widest cell."""
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"

    return [line(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|",
            *(line(r) for r in rows)]  # fmt: skip
