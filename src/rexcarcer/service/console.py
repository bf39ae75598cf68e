"""``rex console`` for a jail on another host: a websocket to its agent
(agent/console.py), this terminal in raw mode at both ends of it.

::

    GET /v1/jails/NAME/console?rows=R&cols=C      (upgraded to a websocket)

    client -> agent   binary: what is typed; text: {"resize": [rows, cols]}
    agent -> client   binary: what the jail's terminal shows;
                      text: {"exit": STATUS}, or {"error", "hint", "exit_code"},
                      the last message before the agent closes

The window size travels at the start and at every SIGWINCH, so full-screen
programs in the jail draw for this terminal.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import ssl
import sys
from typing import Any

from rexcarcer.cluster import AgentApiError, RemoteError

READ = 1 << 14


def size(fd: int) -> tuple[int, int]:
    """(rows, columns) of the terminal ``fd``, or 24x80 when it is none."""
    try:
        got = os.get_terminal_size(fd)
    except OSError:
        return 24, 80
    return max(1, min(got.lines, 1000)), max(1, min(got.columns, 1000))


def run_console(
    url: str, context: ssl.SSLContext, host: str, fds: tuple[int, int] | None = None
) -> int:
    """The shell's exit status; ``fds``: the terminal (input, output), this
    process's standard input and output by default."""
    fd_in, fd_out = fds or (sys.stdin.fileno(), sys.stdout.fileno())
    return asyncio.run(_session(url, context, host, fd_in, fd_out))


async def _session(url: str, context: ssl.SSLContext, host: str, fd_in: int, fd_out: int) -> int:
    import aiohttp

    rows, cols = size(fd_in)
    try:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context)) as http:
            try:
                ws = await http.ws_connect(url, params={"rows": str(rows), "cols": str(cols)},
                                           heartbeat=30, max_msg_size=1 << 20)  # fmt: skip
            except aiohttp.WSServerHandshakeError as exc:
                raise AgentApiError(
                    f"host {host}'s agent refused the console: HTTP {exc.status} {exc.message}",
                    hint="is rex on that host as new as this one? `rex exec` works without one",
                ) from exc
            async with ws:
                with _raw(fd_in):
                    return await _pump(ws, fd_in, fd_out, host)
    except aiohttp.ClientError as exc:
        raise AgentApiError(f"lost host {host}'s agent during the console: {exc}") from exc


@contextlib.contextmanager
def _raw(fd: int) -> Any:
    """This terminal in raw mode (every key goes to the jail's), restored after."""
    if not os.isatty(fd):
        yield
        return
    import termios
    import tty

    saved = termios.tcgetattr(fd)
    # TCSADRAIN as ssh(1) enters raw mode, not setraw's default TCSAFLUSH: that
    # discards what was typed before the console opened (tcsetattr(3))
    tty.setraw(fd, termios.TCSADRAIN)
    try:
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


async def _pump(ws: Any, fd_in: int, fd_out: int, host: str) -> int:
    import aiohttp

    loop = asyncio.get_running_loop()
    typed: asyncio.Queue[bytes | str | None] = asyncio.Queue()  # str: a resize message

    def readable() -> None:
        data = os.read(fd_in, READ)
        if not data:  # standard input ended: nothing more is typed
            loop.remove_reader(fd_in)
        typed.put_nowait(data or None)

    def resized() -> None:
        r, c = size(fd_in)
        typed.put_nowait(json.dumps({"resize": [r, c]}))

    loop.add_reader(fd_in, readable)
    winch = os.isatty(fd_in)
    if winch:
        loop.add_signal_handler(signal.SIGWINCH, resized)
    sender = loop.create_task(_send(ws, typed))
    status: int | None = None
    try:
        async for msg in ws:
            if msg.type == aiohttp.WSMsgType.BINARY:
                _write_all(fd_out, msg.data)
            elif msg.type == aiohttp.WSMsgType.TEXT:
                status = _last(json.loads(msg.data), host)
            elif msg.type == aiohttp.WSMsgType.ERROR:
                break
    finally:
        sender.cancel()
        loop.remove_reader(fd_in)
        if winch:
            loop.remove_signal_handler(signal.SIGWINCH)
    if status is None:
        raise AgentApiError(f"the console on host {host} ended without an exit status",
                            hint="the connection broke; the shell there got a hangup")  # fmt: skip
    return status


async def _send(ws: Any, typed: asyncio.Queue[bytes | str | None]) -> None:
    while (data := await typed.get()) is not None:
        if isinstance(data, str):
            await ws.send_str(data)
        else:
            await ws.send_bytes(data)


def _last(obj: Any, host: str) -> int:
    if isinstance(obj, dict) and isinstance(obj.get("exit"), int):
        return int(obj["exit"])
    if isinstance(obj, dict) and "error" in obj:
        code = int(obj.get("exit_code") or AgentApiError.exit_code)
        raise RemoteError(host, str(obj["error"]), hint=obj.get("hint"), exit_code=code)
    raise AgentApiError(f"host {host}'s agent sent a malformed console message")


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
