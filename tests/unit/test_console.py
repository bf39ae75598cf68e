"""rex console for a jail on another host: a websocket to its agent, a real
pseudo-terminal on each side, the fake runtime's shell in the jail (it answers
lines, says its terminal's size, exits with a status). The window size travels
at the start and at SIGWINCH; the status comes back; a client that goes away
hangs the shell up. tests/cluster/test_move.py opens a real one."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from rexcarcer.agent.console import set_size
from rexcarcer.errors import RexError
from rexcarcer.rexfile.parser import load
from rexcarcer.service.remote import RemoteService
from tests.contract.test_service import Door, _remote_door, _rexfile
from tests.unit.fakes import fake_engine


@pytest.fixture
def door(tmp_path: Path) -> Iterator[Door]:
    yield from _remote_door(fake_engine(tmp_path / "host"), tmp_path)


def _read_until(fd: int, text: bytes, timeout: float = 10) -> bytes:
    got = b""
    deadline = time.monotonic() + timeout
    while text not in got:
        assert time.monotonic() < deadline, got
        try:
            got += os.read(fd, 4096)
        except BlockingIOError:
            time.sleep(0.01)
    return got


def test_a_console_through_the_agent(door: Door, tmp_path: Path) -> None:
    door.svc.up(load(_rexfile(tmp_path)), "app")
    svc = door.svc
    assert isinstance(svc, RemoteService)
    main, sub = os.openpty()  # this side's terminal: the test types into main
    set_size(sub, 30, 100)
    out_r, out_w = os.pipe()
    os.set_blocking(out_r, False)
    seen: list[bytes] = []

    def user() -> None:
        seen.append(_read_until(out_r, b"$ "))
        os.write(main, b"size\r")  # raw mode: a carriage return, as a keyboard sends
        seen.append(_read_until(out_r, b"30 100"))
        set_size(sub, 40, 120)
        os.kill(os.getpid(), signal.SIGWINCH)
        time.sleep(0.3)
        os.write(main, b"size\r")
        seen.append(_read_until(out_r, b"40 120"))
        os.write(main, b"exit 3\r")

    helper = threading.Thread(target=user)
    helper.start()
    from rexcarcer.service.console import run_console

    status = run_console(f"{svc.url}/v1/jails/app/console", svc.files.client_context(), "h2",
                         fds=(sub, out_w))  # fmt: skip
    helper.join(timeout=10)
    assert status == 3, seen
    for fd in (main, sub, out_r, out_w):
        os.close(fd)


def test_a_console_in_a_stopped_or_missing_jail_is_an_error(door: Door, tmp_path: Path) -> None:
    from rexcarcer.service.console import run_console

    svc = door.svc
    assert isinstance(svc, RemoteService)
    r, w = os.pipe()
    with pytest.raises(RexError, match="no jail named 'ghost'") as err:
        run_console(f"{svc.url}/v1/jails/ghost/console", svc.files.client_context(), "h2",
                    fds=(r, w))  # fmt: skip
    assert err.value.exit_code == 11
    for fd in (r, w):
        os.close(fd)


def test_what_was_typed_before_the_console_opened_is_kept() -> None:
    """The client's terminal goes raw without discarding typeahead (script(1),
    a paste, a fast typist: the lines reach the jail's shell)."""
    from rexcarcer.service.console import _raw

    main, sub = os.openpty()
    try:
        os.write(main, b"echo early\n")
        with _raw(sub):
            os.set_blocking(sub, False)
            assert _read_until(sub, b"early\n", timeout=2) == b"echo early\n"
    finally:
        os.close(main)
        os.close(sub)
