"""Same-name races on the in-memory drivers: the second of two runs waits for
the first, then is a no-op or fails with Busy (the real processes race in
tests/integration/test_faults_races.py)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from rexcarcer.engine import jails
from rexcarcer.engine.base import Engine
from rexcarcer.errors import Busy
from rexcarcer.rexfile.ast import Base, Rexfile, Run
from tests.unit.fakes import fake_engine

pytestmark = pytest.mark.unit


def rexfile(tmp_path: Path, cmd: str = "echo hi") -> Rexfile:
    return Rexfile(base=Base("bb"), steps=(Run(cmd),), path=tmp_path / "app.rex")


def first_then_second(
    eng: Engine, first: Callable[[], object], second: Callable[[], object]
) -> object:
    """``first`` runs holding the jail's lock; ``second`` is started meanwhile
    (it must wait) and its result or error is returned."""
    held, go = threading.Event(), threading.Event()
    out: list[object] = []

    def winner() -> None:
        with eng.host.claim(jails.operation_lock("app"), "`rex up app` (pid 1)"):
            held.set()
            go.wait(10)
            first()

    def loser() -> None:
        try:
            out.append(second())
        except Exception as exc:  # handed to the test's assertion
            out.append(exc)

    a = threading.Thread(target=winner)
    a.start()
    assert held.wait(10)
    b = threading.Thread(target=loser)
    b.start()
    time.sleep(0.2)
    assert out == []  # waiting
    go.set()
    a.join(10)
    b.join(10)
    return out[0]


def test_up_against_up_of_the_same_file_both_succeed(tmp_path: Path) -> None:
    eng = fake_engine(tmp_path)
    rf = rexfile(tmp_path)
    got = first_then_second(
        eng, lambda: jails._up(eng, rf, "app"), lambda: jails.up(eng, rf, "app")
    )
    assert not isinstance(got, Exception), got
    assert "nothing to do" in eng.host.progress.messages[-1]  # type: ignore[attr-defined]


def test_up_of_another_file_fails_busy_and_the_winner_stands(tmp_path: Path) -> None:
    eng = fake_engine(tmp_path)
    rf, other = rexfile(tmp_path), rexfile(tmp_path, "echo other")
    got = first_then_second(eng, lambda: jails._up(eng, rf, "app"),
                            lambda: jails.up(eng, other, "app"))  # fmt: skip
    assert isinstance(got, Busy) and got.exit_code == 80
    assert "jail 'app' is busy: `rex up app` (pid 1) changed it" in got.message
    assert got.hint and "run `rex up` again" in got.hint
    rec = jails.record(eng, "app")
    assert rec is not None and rec.definition == rf.digest()


def test_destroy_against_up_fails_busy(tmp_path: Path) -> None:
    eng = fake_engine(tmp_path)
    rf = rexfile(tmp_path)
    got = first_then_second(eng, lambda: jails._up(eng, rf, "app"),
                            lambda: jails.destroy(eng, "app"))  # fmt: skip
    assert isinstance(got, Busy)
    assert jails.is_running(eng, "app")


def test_destroy_against_destroy_is_a_no_op(tmp_path: Path) -> None:
    eng = fake_engine(tmp_path)
    jails.up(eng, rexfile(tmp_path), "app")
    got = first_then_second(eng, lambda: jails._destroy(eng, "app", with_volumes=False),
                            lambda: jails.destroy(eng, "app"))  # fmt: skip
    assert got == []
    assert jails.record(eng, "app") is None


def test_destroy_after_an_unchanged_up_goes_on(tmp_path: Path) -> None:
    eng = fake_engine(tmp_path)
    rf = rexfile(tmp_path)
    jails.up(eng, rf, "app")
    got = first_then_second(eng, lambda: jails._up(eng, rf, "app"),
                            lambda: jails.destroy(eng, "app"))  # fmt: skip
    assert got == []  # the up changed nothing: the destroy is not a loser
    assert jails.record(eng, "app") is None
