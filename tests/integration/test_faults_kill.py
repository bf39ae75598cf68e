"""Kill anywhere: `rex up` (a new jail, an update) and `rex destroy` are killed
with SIGKILL right after each step boundary they print (the k-th ``==>``
line, for every k); then one `rex up` or `rex destroy` must converge, leaving
the jail running and complete or gone without a trace.

The steps are the ones an uninterrupted run of the same command prints; each
kill starts from the same state, with a definition that is built afresh (an
``ENV`` of the round changes the step's key), so a kill at the build step
falls inside a real build. ``REX_KILL_REPORT``: a file the matrix (command x
step) is appended to, as JSON lines (tests/killsteps.py).

`rex move` and the agent serving a remote `rex up`, killed the same way, are
tests/cluster/test_faults_kill_cluster.py.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.integration.conftest import Rex
from tests.integration.faults import assert_absent, assert_present
from tests.killsteps import report, run_and_kill, steps, verbs

NAME = "victim"
NOT_FOUND = 11


def definition(marker: str, round_: str) -> str:
    return (f"BASE busybox\nENV ROUND={round_}\n"
            f"PROVISION RUN echo {marker} > /marker; sleep 0.3\nSERVICE s PORT 7\n")  # fmt: skip


def _matrix(
    rex: Rex,
    command: str,
    setup: Callable[[str], tuple[str | Path, ...]],
    converge: Callable[[str], str],
) -> None:
    """``setup(round)`` brings the host to the start state and returns the
    command to kill; ``converge(round)`` runs the converging command, checks the
    end state and names what it ran."""
    # the first jail of a host also creates its CAs (two more steps): a run
    # before the reference leaves the steps every later round prints
    rex.run(*setup("prime"))
    converge("prime")
    reference = rex.run(*setup("ref"))
    want = steps(reference.stderr)
    assert want, reference.stderr
    converge("ref")
    for k in range(1, len(want) + 1):
        round_ = f"k{k}"
        args = setup(round_)
        killed, seen = run_and_kill(rex.popen(*args), k)
        # the same steps as the reference (image keys differ: compare the verbs)
        assert verbs(seen[:k]) == verbs(want[:k]), (seen, want)
        t0 = time.monotonic()
        how = converge(round_)
        report(command, k, want[k - 1], killed, how, time.monotonic() - t0)


@pytest.fixture
def rexfile(tmp_path: Path) -> Path:
    return tmp_path / f"{NAME}.rex"


def test_kill_rex_up_of_a_new_jail(rex: Rex, rexfile: Path) -> None:
    def setup(round_: str) -> tuple[str | Path, ...]:
        rexfile.write_text(definition("new", round_))
        return ("up", rexfile)

    def converge(round_: str) -> str:
        rex.run("up", rexfile)  # the same file again: it converges to it
        assert_present(rex, NAME, "new\n")
        rex.run("destroy", NAME)
        assert_absent(rex, NAME)
        return "rex up"

    _matrix(rex, "up (new jail)", setup, converge)


def test_kill_rex_up_of_a_new_jail_then_destroy(rex: Rex, rexfile: Path) -> None:
    def setup(round_: str) -> tuple[str | Path, ...]:
        rexfile.write_text(definition("new", round_))
        return ("up", rexfile)

    def converge(round_: str) -> str:
        done = rex.run("destroy", NAME, check=False)
        # killed before it claimed the name, there is nothing to destroy
        assert done.returncode in (0, NOT_FOUND), done.stderr
        assert_absent(rex, NAME)
        return "rex destroy"

    _matrix(rex, "up (new jail), then destroy", setup, converge)


def test_kill_rex_up_of_an_update(rex: Rex, rexfile: Path) -> None:
    def setup(round_: str) -> tuple[str | Path, ...]:
        rexfile.write_text(definition("old", "base"))
        rex.run("up", rexfile)
        rexfile.write_text(definition("new", round_))
        return ("up", rexfile)

    def converge(round_: str) -> str:
        rex.run("up", rexfile)
        assert_present(rex, NAME, "new\n")
        rex.run("destroy", NAME)
        assert_absent(rex, NAME)
        return "rex up"

    _matrix(rex, "up (update)", setup, converge)


def test_kill_rex_destroy(rex: Rex, rexfile: Path) -> None:
    def setup(round_: str) -> tuple[str | Path, ...]:
        rexfile.write_text(definition("old", "base"))
        rex.run("up", rexfile)
        return ("destroy", NAME)

    def converge(round_: str) -> str:
        done = rex.run("destroy", NAME, check=False)
        assert done.returncode in (0, NOT_FOUND), done.stderr
        assert_absent(rex, NAME)
        return "rex destroy"

    _matrix(rex, "destroy", setup, converge)
