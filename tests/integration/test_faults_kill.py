"""Kill anywhere: `rex up` (a new jail, an update) and `rex destroy` are killed
with SIGKILL right after each step boundary they print (the k-th ``==>``
line, for every k); then one `rex up` or `rex destroy` must converge, leaving
the jail running and complete or gone without a trace.

The steps are the ones an uninterrupted run of the same command prints; each
kill starts from the same state, with a definition that is built afresh (an
``ENV`` of the round changes the step's key), so a kill at the build step
falls inside a real build. ``REX_KILL_REPORT``: a file the matrix (command x
step) is appended to, as JSON lines.

(`rex move` and a remote `rex up` through an agent are not covered here.)
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.integration.conftest import Rex
from tests.integration.faults import assert_absent, assert_present

NAME = "victim"
NOT_FOUND = 11


def definition(marker: str, round_: str) -> str:
    return (f"BASE busybox\nENV ROUND={round_}\n"
            f"PROVISION RUN echo {marker} > /marker; sleep 0.3\nSERVICE s PORT 7\n")  # fmt: skip


def _steps(stderr: str) -> list[str]:
    return [line.split("==> ", 1)[1] for line in stderr.splitlines() if "==> " in line]


def run_and_kill(rex: Rex, args: tuple[str | Path, ...], k: int) -> tuple[bool, list[str]]:
    """Run ``rex *args``; SIGKILL it as soon as it printed its k-th step.
    Whether it was killed (not finished first), and the steps it printed."""
    proc = rex.popen(*args)
    assert proc.stderr is not None
    seen: list[str] = []
    killed = False
    try:
        for line in proc.stderr:
            if "==> " in line:
                seen.append(line.split("==> ", 1)[1].rstrip())
                if len(seen) == k:
                    proc.send_signal(signal.SIGKILL)
                    killed = True
                    break
        proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=60)
    return killed and proc.returncode == -signal.SIGKILL, seen


def _report(command: str, k: int, step: str, killed: bool, converge: str, secs: float) -> None:
    path = os.environ.get("REX_KILL_REPORT")
    if path:
        with open(path, "a") as f:
            row = {"command": command, "k": k, "step": step, "killed": killed,
                   "converged_by": converge, "seconds": round(secs, 2)}  # fmt: skip
            f.write(json.dumps(row) + "\n")


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
    steps = _steps(reference.stderr)
    assert steps, reference.stderr
    converge("ref")
    for k in range(1, len(steps) + 1):
        round_ = f"k{k}"
        args = setup(round_)
        killed, seen = run_and_kill(rex, args, k)
        # the same steps as the reference (image keys differ: compare the verbs)
        assert [x.split()[0] for x in seen[:k]] == [x.split()[0] for x in steps[:k]], (seen, steps)
        t0 = time.monotonic()
        how = converge(round_)
        _report(command, k, steps[k - 1], killed, how, time.monotonic() - t0)


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
