"""Same-name races on one host: `rex up` against `rex up`, `rex up` against
`rex destroy`, `rex destroy` against `rex destroy`, as real processes against
the real pool. The loser fails with "busy" (exit 80) or is a no-op; the end
state is the winner's, with nothing left over.

Rounds per pair: ``REX_RACE_ROUNDS`` (default 3, well under a minute here);
``bench/bench_races.py`` runs 100 and prints the figures this test writes to
``REX_RACE_REPORT``.
"""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from pathlib import Path

import pytest

from tests.integration.conftest import Rex
from tests.integration.faults import assert_absent, assert_present

ROUNDS = int(os.environ.get("REX_RACE_ROUNDS", "3"))
NAME = "racer"
BUSY, NOT_FOUND = 80, 11
A = "BASE busybox\nPROVISION RUN echo a > /marker\nSERVICE s PORT 7\n"
B = "BASE busybox\nPROVISION RUN echo b > /marker\nSERVICE s PORT 7\n"


def _race(rex: Rex, *commands: tuple[str, ...]) -> list[tuple[int, str]]:
    procs = [rex.popen(*c) for c in commands]
    out = []
    for p in procs:
        _, err = p.communicate(timeout=300)
        out.append((p.returncode, err))
    return out


def _report(pair: str, rounds: int, tally: Counter[str], seconds: float) -> None:
    """After every round (a bench cut short still has its figures so far)."""
    path = os.environ.get("REX_RACE_REPORT")
    if path:
        with open(path, "a") as f:
            f.write(json.dumps({"pair": pair, "rounds": rounds, "outcomes": dict(tally),
                                "seconds": round(seconds, 1)}) + "\n")  # fmt: skip


@pytest.fixture
def files(tmp_path: Path) -> tuple[Path, Path]:
    a, b = tmp_path / "a" / f"{NAME}.rex", tmp_path / "b" / f"{NAME}.rex"
    a.parent.mkdir()
    b.parent.mkdir()
    a.write_text(A)
    b.write_text(B)
    return a, b


def test_up_against_up(rex: Rex, files: tuple[Path, Path]) -> None:
    """Two `rex up`s of one file both succeed: one creates, the other waits and
    finds nothing to do."""
    a, _ = files
    tally: Counter[str] = Counter()
    t0 = time.monotonic()
    for i in range(ROUNDS):
        results = _race(rex, ("up", a), ("up", a))
        assert [code for code, _ in results] == [0, 0], results
        tally["both succeeded"] += 1
        tally["one waited: nothing to do"] += sum("nothing to do" in e for _, e in results)
        assert_present(rex, NAME, "a\n")
        rex.run("destroy", NAME)
        assert_absent(rex, NAME)
        _report("up/up", i + 1, tally, time.monotonic() - t0)


def test_up_against_destroy(rex: Rex, files: tuple[Path, Path]) -> None:
    """Each round starts from a running jail of A; `rex up` of B (an update;
    every other round A again, a no-op) races `rex destroy`."""
    a, b = files
    tally: Counter[str] = Counter()
    t0 = time.monotonic()
    for i in range(ROUNDS):
        rex.run("up", a)
        f, marker = (b, "b\n") if i % 2 == 0 else (a, "a\n")
        (up, up_err), (de, de_err) = _race(rex, ("up", f), ("destroy", NAME))
        for code, err in ((up, up_err), (de, de_err)):
            assert code in (0, BUSY), err
            if code == BUSY:
                assert f"jail {NAME!r} is busy" in err and "while this `rex" in err, err
        assert (up, de) != (BUSY, BUSY), (up_err, de_err)
        if de == BUSY:  # up won: its definition runs
            assert_present(rex, NAME, marker)
            tally["up won, destroy busy"] += 1
        elif up == BUSY:  # destroy won: the jail is gone
            assert_absent(rex, NAME)
            tally["destroy won, up busy"] += 1
        else:  # one after the other: either order leaves a clean state
            if rex.jails():
                assert_present(rex, NAME, marker)
                tally["both ran: destroy then up"] += 1
            else:
                assert_absent(rex, NAME)
                tally["both ran: up then destroy"] += 1
        rex.run("destroy", NAME, check=False)
        assert_absent(rex, NAME)
        _report("up/destroy", i + 1, tally, time.monotonic() - t0)


def test_destroy_against_destroy(rex: Rex, files: tuple[Path, Path]) -> None:
    a, _ = files
    tally: Counter[str] = Counter()
    t0 = time.monotonic()
    for i in range(ROUNDS):
        rex.run("up", a)
        results = _race(rex, ("destroy", NAME), ("destroy", NAME))
        codes = sorted(code for code, _ in results)
        # the loser waited (a no-op) or came after the winner had finished
        assert codes in ([0, 0], [0, NOT_FOUND]), results
        tally["both succeeded" if codes == [0, 0] else "second found no jail"] += 1
        assert_absent(rex, NAME)
        _report("destroy/destroy", i + 1, tally, time.monotonic() - t0)
