"""The agent's side of ``rex console`` for another host (the client and the
messages are service/console.py): a pseudo-terminal whose subsidiary side is
the controlling terminal of a login shell in the jail (run.py ``tty``), its
main side joined to the websocket.

The window size comes with the request (``rows``, ``cols``: apirequest.py
checks them) and with every resize message, set with TIOCSWINSZ on the main
side (tty_ioctl(4): the kernel then sends SIGWINCH to the jail's foreground
process group). When the client goes away, the main side is closed: the
terminal hangs up and the shell gets SIGHUP, as at the end of an ssh session.
When the shell ends, what it wrote last is sent, then its exit status.

A console holds a thread of its own for as long as the shell runs; at most
``Limits.consoles`` run at once (a further one is refused with 503), so
consoles never take the threads the other verbs run in.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import fcntl
import json
import logging
import os
import struct
import termios
from collections.abc import Callable
from typing import Any

from aiohttp import WSMsgType, web

from rexcarcer.agent.apirequest import Call, Refused
from rexcarcer.cluster import AgentApiError
from rexcarcer.errors import RexError

log = logging.getLogger("rexcarcer.agent")

READ = 1 << 16
BACKLOG = 64  # chunks of output queued for a slow client before reading pauses
DRAIN = 2.0  # s to wait for the last output after the shell ended


def set_size(fd: int, rows: int, cols: int) -> None:
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


class Console:
    def __init__(self, pool: concurrent.futures.Executor, slots: int) -> None:
        self.pool = pool
        self.free = slots

    async def serve(
        self, request: web.BaseRequest, call: Call, who: str, shell: Callable[[str, int], int]
    ) -> web.StreamResponse:
        ws = web.WebSocketResponse(heartbeat=30.0, max_msg_size=1 << 16)
        if not ws.can_prepare(request).ok:
            raise Refused(400, AgentApiError("a console is a websocket (Upgrade: websocket)"))
        if self.free <= 0:
            raise Refused(503, AgentApiError("this host serves as many consoles as it may",
                                             hint="try again later"))  # fmt: skip
        self.free -= 1
        try:
            await ws.prepare(request)
            log.info("API: %s opens a console in jail %s", who, call.jail)
            await _Session(ws, call, shell, self.pool).run()
        finally:
            self.free += 1
        return ws


class _Session:
    def __init__(
        self, ws: web.WebSocketResponse, call: Call, shell: Callable[[str, int], int],
        pool: concurrent.futures.Executor,
    ) -> None:  # fmt: skip
        self.ws = ws
        self.call = call
        self.shell = shell
        self.pool = pool
        self.main, self.sub = os.openpty()
        self.out: asyncio.Queue[bytes | None] = asyncio.Queue()
        self.reading = False
        self.open = True

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        set_size(self.main, int(self.call.param("rows") or 24), int(self.call.param("cols") or 80))
        os.set_blocking(self.main, False)
        done = loop.run_in_executor(self.pool, self._shell)
        self._resume()
        sender = loop.create_task(self._send())
        typer = loop.create_task(self._type())
        last: dict[str, Any]
        try:
            last = {"exit": await done}
        except RexError as exc:
            last = {"error": exc.message, "hint": exc.hint, "exit_code": exc.exit_code}
        finally:
            typer.cancel()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(sender), DRAIN)
        self._hang_up()
        sender.cancel()
        with contextlib.suppress(ConnectionError, RuntimeError):
            await self.ws.send_str(json.dumps(last))
        await self.ws.close()

    def _shell(self) -> int:
        try:
            return self.shell(self.call.jail, self.sub)
        finally:
            os.close(self.sub)

    def _resume(self) -> None:
        if self.open and not self.reading:
            asyncio.get_running_loop().add_reader(self.main, self._readable)
            self.reading = True

    def _pause(self) -> None:
        if self.reading:
            asyncio.get_running_loop().remove_reader(self.main)
            self.reading = False

    def _readable(self) -> None:
        try:
            data = os.read(self.main, READ)
        except BlockingIOError:
            return
        except OSError:  # EIO: no process holds the terminal any more
            data = b""
        if not data:
            self._pause()
            self.out.put_nowait(None)
            return
        self.out.put_nowait(data)
        if self.out.qsize() >= BACKLOG:
            self._pause()

    async def _send(self) -> None:
        while (data := await self.out.get()) is not None:
            await self.ws.send_bytes(data)
            if self.out.qsize() < BACKLOG // 2:
                self._resume()

    async def _type(self) -> None:
        async for msg in self.ws:
            if msg.type == WSMsgType.BINARY:
                await self._write(msg.data)
            elif msg.type == WSMsgType.TEXT:
                self._resize(msg.data)
            else:
                break
        self._hang_up()  # the client went away: SIGHUP for the shell

    async def _write(self, data: bytes) -> None:
        view = memoryview(data)
        while view and self.open:
            try:
                view = view[os.write(self.main, view) :]
            except BlockingIOError:
                await asyncio.sleep(0.01)

    def _resize(self, text: str) -> None:
        try:
            rows, cols = json.loads(text)["resize"]
            if not (type(rows) is int and type(cols) is int and 0 < rows <= 1000
                    and 0 < cols <= 1000):  # fmt: skip
                raise ValueError(f"bad size {rows!r}x{cols!r}")
        except (ValueError, KeyError, TypeError) as exc:
            log.info("API: a malformed console message ignored: %s", exc)
            return
        if self.open:
            set_size(self.main, rows, cols)

    def _hang_up(self) -> None:
        if self.open:
            self._pause()
            self.open = False
            os.close(self.main)
            self.out.put_nowait(None)
