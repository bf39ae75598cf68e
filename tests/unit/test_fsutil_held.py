"""fsutil.HeldFiles on the real kernel's /proc (no root needed): a held
descriptor shows the file afresh at every read, and a process that is gone
fails as a fresh open would (cgroup files: tests/integration/test_limits.py)."""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from rexcarcer.fsutil import HeldFiles
from rexcarcer.runtime import procfs
from tests.capability import missing


def _state(held: HeldFiles, pid: int) -> str:
    return procfs.parse_stat(held.read(f"/proc/{pid}/stat").decode()).state


def _until(cond: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


@pytest.fixture
def child() -> Iterator[subprocess.Popen[bytes]]:
    if not Path("/proc/self/stat").exists():
        missing("/proc (Linux procfs)")
    proc = subprocess.Popen(["sleep", "60"])
    yield proc
    proc.kill()
    proc.wait()


def test_a_held_file_is_read_afresh_and_fails_once_its_process_is_gone(
    child: subprocess.Popen[bytes],
) -> None:
    held = HeldFiles(limit=16)
    _until(lambda: _state(held, child.pid) == "S")
    assert held.held() == 1
    child.send_signal(signal.SIGSTOP)
    _until(lambda: _state(held, child.pid) == "T")  # the same descriptor, read again
    assert held.held() == 1
    child.kill()
    child.wait()  # reaped: the held file answers ESRCH, the path no longer exists
    with pytest.raises(FileNotFoundError):
        held.read(f"/proc/{child.pid}/stat")
    assert held.held() == 0


def test_no_more_than_the_limit_is_held_and_unread_files_are_let_go(
    child: subprocess.Popen[bytes],
) -> None:
    held = HeldFiles(limit=1)
    mine, its = "/proc/self/stat", f"/proc/{child.pid}/stat"
    assert held.read(mine) and held.read(its) and held.held() == 1
    assert procfs.parse_stat(held.read(its).decode()).pid == child.pid  # not held: opened
    roomy = HeldFiles(limit=8)
    roomy.read(its)
    for _ in range(600):  # two sweeps: the first window still saw it
        roomy.read(mine)
    assert roomy.held() == 1  # its file was not read since the last sweep
    roomy.close()
    assert roomy.held() == 0
