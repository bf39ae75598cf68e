"""Kill a rex process right after the k-th step it reports (a ``==> STEP``
line), and the kill matrix's report: shared by tests/integration/
test_faults_kill.py (one host) and tests/cluster/test_faults_kill_cluster.py
(`rex move`, the agent serving a remote `rex up`).

``REX_KILL_REPORT``: a file each round's row (command, k, step, killed, what
converged it, seconds) is appended to, as JSON lines."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

STEP = "==> "


def steps(text: str) -> list[str]:
    """The steps a run reported, in order."""
    return [line.split(STEP, 1)[1].rstrip() for line in text.splitlines() if STEP in line]


def verbs(seen: list[str]) -> list[str]:
    """The steps' first words: image keys, addresses and times differ between rounds."""
    return [s.split()[0] for s in seen]


def kill_at_step(lines: Iterable[str], k: int, kill: Callable[[], None]) -> tuple[bool, list[str]]:
    """Read ``lines`` until the k-th step, then ``kill()``; whether it got there,
    and the steps seen."""
    seen: list[str] = []
    for line in lines:
        if STEP in line:
            seen.append(line.split(STEP, 1)[1].rstrip())
            if len(seen) == k:
                kill()
                return True, seen
    return False, seen


def run_and_kill(proc: subprocess.Popen[str], k: int) -> tuple[bool, list[str]]:
    """SIGKILL ``proc`` (its stderr a pipe) as soon as it printed its k-th step.
    Whether it was killed (not finished first), and the steps it printed."""
    assert proc.stderr is not None
    try:
        reached, seen = kill_at_step(proc.stderr, k, lambda: proc.send_signal(signal.SIGKILL))
        proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=60)
    return reached and proc.returncode == -signal.SIGKILL, seen


def follow(path: Path, offset: int, timeout: float = 120.0) -> Iterator[str]:
    """The lines appended to ``path`` after ``offset`` (a log another process
    writes), as they come; ends after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    with path.open() as f:
        f.seek(offset)
        partial = ""
        while time.monotonic() < deadline:
            chunk = f.readline()
            if not chunk:
                time.sleep(0.02)
                continue
            partial += chunk
            if partial.endswith("\n"):
                yield partial
                partial = ""


def report(command: str, k: int, step: str, killed: bool, converge: str, secs: float) -> None:
    path = os.environ.get("REX_KILL_REPORT")
    if path:
        with open(path, "a") as f:
            row = {"command": command, "k": k, "step": step, "killed": killed,
                   "converged_by": converge, "seconds": round(secs, 2)}  # fmt: skip
            f.write(json.dumps(row) + "\n")
