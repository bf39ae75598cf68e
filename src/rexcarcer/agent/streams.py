"""Streamed bodies and answers of the agents' API, between aiohttp's event loop
and the blocking code that reads or writes them in a worker thread, through a
pipe or a bounded queue: memory stays at a chunk or two whatever the size.

- ``pipe_body``: a request body into a reader the worker consumes (``zfs
  receive`` of a jail moving here, a tar unpacked into a jail by ``rex cp``).
  The body is read only after the request passed every check; a body that
  stalls (``Limits.body_stall``) or ends before its Content-Length is an
  error, and the worker then sees its stream end early and fails too.
- ``FrameWriter``: a file the worker writes (a tar out of a jail) whose bytes
  go out as data frames (service/frames.py), each write waiting until the
  client took the one before it (``Limits.write_stall``).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import io
import os
from collections.abc import Callable
from typing import IO, Any, TypeVar

from aiohttp import web

from rexcarcer.agent.apirequest import MAX_STREAM, Call, Refused
from rexcarcer.agent.listener import Limits
from rexcarcer.cluster import AgentApiError
from rexcarcer.service import frames

T = TypeVar("T")
CHUNK = 1 << 20


async def pipe_body(
    request: web.BaseRequest, call: Call, limits: Limits,
    work: concurrent.futures.Executor, pipes: concurrent.futures.Executor,
    consume: Callable[[IO[bytes]], T],
) -> T:  # fmt: skip
    """Run ``consume`` on the request's body, as a stream, in ``work``."""
    loop = asyncio.get_running_loop()
    r, w = os.pipe()
    reader = os.fdopen(r, "rb")
    writer = os.fdopen(w, "wb", buffering=0)

    def run() -> T:
        with reader:
            return consume(reader)

    done = loop.run_in_executor(work, run)
    received = 0
    try:
        while True:
            try:
                chunk = await asyncio.wait_for(request.content.read(CHUNK), limits.body_stall)
            except TimeoutError as exc:
                stalled = f"the request body stalled for {limits.body_stall:.0f} s"
                raise Refused(408, AgentApiError(stalled)) from exc
            if not chunk:
                break
            received += len(chunk)
            if received > (call.body if not call.chunked else MAX_STREAM):
                raise Refused(413, AgentApiError("the request body is longer than announced"))
            try:
                await loop.run_in_executor(pipes, _write_all, writer, chunk)
            except BrokenPipeError:
                break  # the worker stopped reading: its result or error tells why
    except BaseException:
        _close(writer)
        with contextlib.suppress(Exception):
            await done
        raise
    _close(writer)
    if not call.chunked and received < call.body:
        with contextlib.suppress(Exception):
            await done
        raise Refused(400, AgentApiError(f"the request body ended {call.body - received} "
                                         "bytes early"))  # fmt: skip
    return await done


def _write_all(stream: IO[bytes], data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = stream.write(view)
        view = view[written or 0 :]


def _close(stream: IO[bytes]) -> None:
    with contextlib.suppress(OSError):
        stream.close()


class FrameWriter(io.RawIOBase):
    """Written in a worker thread; each write becomes a data frame of ``resp``."""

    def __init__(
        self, resp: web.StreamResponse, loop: asyncio.AbstractEventLoop, limits: Limits
    ) -> None:
        super().__init__()
        self.resp = resp
        self.loop = loop
        self.limits = limits

    def writable(self) -> bool:
        return True

    def write(self, data: Any, /) -> int:  # a bytes-like object
        payload = bytes(data)
        sent = asyncio.run_coroutine_threadsafe(
            self.resp.write(frames.frame(frames.DATA, payload)), self.loop
        )
        try:
            sent.result(timeout=self.limits.write_stall)
        except (TimeoutError, ConnectionError, concurrent.futures.CancelledError) as exc:
            sent.cancel()
            raise AgentApiError("the client went away during the copy") from exc
        return len(payload)


def buffered(raw: FrameWriter) -> io.BufferedWriter:
    """Frames of about a chunk each, not of every small write tarfile makes."""
    return io.BufferedWriter(raw, buffer_size=CHUNK)
