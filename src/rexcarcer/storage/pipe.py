"""``zfs send`` and ``zfs receive`` as streams a caller reads or writes in its own
thread, through a pipe: what export, import and ``rex move`` hash, frame and
carry, with as much memory as one pipe buffer and one chunk.

``sending`` runs ``Storage.send`` in a thread and yields the read end: the
caller reads to the end (an early stop closes the pipe, and the send ends with
EPIPE). ``receiving`` runs ``Storage.receive`` in a thread and yields the write
end. Either way the thread's error (zfs(8) refusing a stream, say) is raised
in the caller's thread when the block ends, before or instead of its own
error's consequences, so that a failed send is never taken for a short stream.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import IO

from rexcarcer.errors import StorageError
from rexcarcer.storage.base import Storage


class _Worker:
    def __init__(self, name: str, work: Callable[[], None]) -> None:
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, args=(work,), name=name)

    def _run(self, work: Callable[[], None]) -> None:
        try:
            work()
        except BaseException as exc:  # handed to the caller's thread
            self.error = exc


@contextmanager
def sending(storage: Storage, snapshot: str, *, since: str | None = None) -> Iterator[IO[bytes]]:
    """The ``zfs send`` stream of ``snapshot`` (incremental from ``since``)."""
    r, w = os.pipe()
    writer = os.fdopen(w, "wb")

    def send() -> None:
        with writer:
            storage.send(snapshot, writer, since=since)

    worker = _Worker("rex-zfs-send", send)
    reader = os.fdopen(r, "rb")
    worker.thread.start()
    try:
        yield reader
    except BaseException:
        reader.close()  # the send sees EPIPE and ends
        worker.thread.join()
        raise
    reader.close()
    worker.thread.join()
    if worker.error is not None:
        raise worker.error


@contextmanager
def receiving(storage: Storage, name: str) -> Iterator[IO[bytes]]:
    """A stream to write into ``zfs receive -u name``; the receive has finished
    (and succeeded) when the block ends without an error."""
    r, w = os.pipe()
    reader = os.fdopen(r, "rb")

    def receive() -> None:
        with reader:
            storage.receive(name, reader)

    worker = _Worker("rex-zfs-receive", receive)
    writer = os.fdopen(w, "wb")
    worker.thread.start()
    try:
        yield writer
        writer.close()
    except BaseException as exc:
        _close_quietly(writer)  # the receive sees the end of a short stream and fails
        worker.thread.join()
        if isinstance(exc, BrokenPipeError) and worker.error is not None:
            raise worker.error from exc  # the receive stopped first: its reason
        raise
    worker.thread.join()
    if worker.error is not None:
        raise worker.error


def _close_quietly(stream: IO[bytes]) -> None:
    with contextlib.suppress(OSError):  # the unflushed rest cannot go anywhere
        stream.close()


def copy(src: IO[bytes], dst: IO[bytes], size: int | None, chunk: int = 1 << 20,
         each: Callable[[bytes], None] | None = None) -> int:  # fmt: skip
    """Copy ``size`` bytes (all, when None) from ``src`` to ``dst``, calling ``each``
    with every chunk; the bytes copied. A source that ends early is an error."""
    done = 0
    while size is None or done < size:
        data = src.read(chunk if size is None else min(chunk, size - done))
        if not data:
            if size is not None:
                raise StorageError(f"a stream ended after {done} of its {size} bytes")
            break
        if each is not None:
            each(data)
        dst.write(data)
        done += len(data)
    return done
