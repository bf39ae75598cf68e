"""Host.claim: the lock a `rex up` or `rex destroy` holds for its whole run,
and what a second run of the same jail learns when it had to wait."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from tests.unit.fakes import fake_host

pytestmark = pytest.mark.unit


def test_a_free_lock_is_taken_without_waiting(tmp_path: Path) -> None:
    host = fake_host(tmp_path)
    with host.claim("op-web", "first") as waited:
        assert waited is None
    with host.claim("op-web", "second") as waited:  # released: free again
        assert waited is None


def test_the_second_run_waits_and_learns_who_held_it(tmp_path: Path) -> None:
    host = fake_host(tmp_path)
    held, release = threading.Event(), threading.Event()
    seen: list[str | None] = []

    def first() -> None:
        with host.claim("op-web", "`rex up web` (pid 1)"):
            held.set()
            release.wait(10)

    t = threading.Thread(target=first)
    t.start()
    assert held.wait(10)

    def second() -> None:
        with host.claim("op-web", "`rex destroy web` (pid 2)") as waited:
            seen.append(waited)

    t2 = threading.Thread(target=second)
    t2.start()
    time.sleep(0.1)
    assert seen == []  # still waiting for the first
    release.set()
    t.join(10)
    t2.join(10)
    assert seen == ["`rex up web` (pid 1)"]
