"""Records parsed from a listing, kept for the next listing of the same prefix.

The agent lists every jail record and health record for each ``rex ls`` and on
every tick of its threads; with hundreds of jails, parsing the JSON of records
that did not change was most of a listing's time in the store. A parsed record
is a pure function of its stored text, so the memo is keyed by that text: a
record another ``rex`` process changed has another text and is parsed again;
nothing in the memo can go stale. Each listing replaces the memo with what it
returned, so it holds one listing's records and never grows with churn.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, Generic, TypeVar

from rexcarcer.state.base import Entry

T = TypeVar("T")


class ParsedListing(Generic[T]):
    def __init__(self, parse: Callable[[Any], T]) -> None:
        self._parse = parse
        self._last: dict[str, T] = {}

    def of(self, entries: Iterable[Entry]) -> list[T]:
        """``parse(entry.json())`` for each entry, in order; the parsers raise
        for a damaged record as before (nothing is kept of a failed one)."""
        last = self._last
        kept: dict[str, T] = {}
        out: list[T] = []
        for e in entries:
            value = last.get(e.value)
            if value is None:
                value = self._parse(e.json())
            kept[e.value] = value
            out.append(value)
        # one assignment: threads listing at once each leave a whole memo
        self._last = kept
        return out
