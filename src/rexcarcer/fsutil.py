"""The one atomic write of a host-side file (and the reads of small ones).

Every file rex writes on the host (configuration, keys, the DNS include file,
run files) goes through ``atomic_write``:

1. a temporary file in the same directory, named ``.<name>.<random>.tmp`` (a
   dot file that no ``*.conf`` include matches), opened
   ``O_CREAT|O_EXCL|O_NOFOLLOW``: never an existing file, never through a
   planted symlink, never shared with a concurrent writer;
2. its mode set with ``fchmod`` before any data is written, so a key is never
   readable by others for an instant (the umask plays no part);
3. the data written and ``fsync``\\ ed, the file renamed over ``path``
   (rename(2) is atomic: a reader sees the old or the new file, never half),
   then the directory ``fsync``\\ ed so the rename survives a crash.

A failure removes the temporary file and raises ``OSError``: callers translate
it into their own error with the path in the message.
"""

from __future__ import annotations

import contextlib
import os
import resource
import secrets
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


def atomic_write(
    path: Path,
    data: bytes | str,
    *,
    mode: int = 0o644,
    owner: tuple[int, int] | None = None,
    only_if_changed: bool = False,
    make_parents: bool = False,
) -> bool:
    """Replace ``path`` with ``data``; whether the file changed.

    ``only_if_changed``: leave an identical file alone (its mode included).
    ``owner``: (uid, gid) given to the file before it is renamed into place.
    """
    raw = data.encode() if isinstance(data, str) else data
    if only_if_changed and _same(path, raw, mode):
        return False
    with atomic_file(path, mode=mode, owner=owner, make_parents=make_parents) as out:
        out.write(raw)
    return True


@contextlib.contextmanager
def atomic_file(
    path: Path,
    *,
    mode: int = 0o644,
    owner: tuple[int, int] | None = None,
    make_parents: bool = False,
) -> Iterator[BinaryIO]:
    """A binary file to write ``path``'s new content into (streams of any size);
    renamed into place when the block ends without an exception, removed if not."""
    if make_parents:
        path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{secrets.token_hex(4)}.tmp"
    fd = os.open(tmp, _FLAGS, mode)
    try:
        with os.fdopen(fd, "wb") as out:
            os.fchmod(out.fileno(), mode)
            if owner is not None:
                os.fchown(out.fileno(), *owner)
            yield out
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    fsync_dir(path.parent)


def fsync_dir(directory: Path) -> None:
    """Make a rename in ``directory`` durable (a no-op where directories cannot
    be opened for fsync)."""
    try:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return
    try:
        with contextlib.suppress(OSError):
            os.fsync(fd)
    finally:
        os.close(fd)


def _same(path: Path, raw: bytes, mode: int) -> bool:
    try:
        st = path.lstat()
        if not path.is_file() or path.is_symlink() or (st.st_mode & 0o7777) != mode:
            return False
        return path.read_bytes() == raw
    except OSError:
        return False


def read_small(path: str) -> bytes:
    """The whole of a small file (a run file, a /proc or cgroup file) with one
    open and a read until its end, without ``Path`` or a buffered file object:
    ``rex ls`` reads several of these for every jail. A read shorter than
    asked is the end: of a regular file (rex replaces these by rename, nothing
    appends to them) and of the kernel's small seq files, which hand out all
    they show in the first read. ``OSError`` as raised (its ``filename`` is
    ``path``)."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        data = os.read(fd, _SMALL)
        if len(data) < _SMALL:
            return data
        chunks = [data]
        while chunk := os.read(fd, _SMALL):
            chunks.append(chunk)
    finally:
        os.close(fd)
    return b"".join(chunks)


_SMALL = 65536


class HeldFiles:
    """Small kernel files (/proc/PID/stat, cgroup counters) kept open between
    reads; each read is one pread(2) at offset 0 instead of open, read, close.

    The kernel renders a seq file afresh for a read from offset 0
    (fs/seq_file.c seq_read_iter: "if request is to read from zero offset,
    reset iterator"), and an open file stays bound to the object it was opened
    on: once a process is reaped its /proc/PID/stat answers ESRCH, a removed
    cgroup's files ENODEV (kernfs), even when a new process took the PID or a
    new group the name. Any error drops the descriptor and the path is opened
    again, so a read answers as a fresh open would. Never for regular files: a
    file replaced by rename keeps its old content behind an open descriptor.

    At most a quarter of the soft RLIMIT_NOFILE is held (beyond it a read
    opens and closes as ``read_small``); descriptors not read between two
    sweeps are closed. Every use of a descriptor, and every close, happens
    under one lock, so no thread reads a number closed and reused meanwhile."""

    def __init__(self, limit: int | None = None) -> None:
        if limit is None:
            limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0] // 4
        self.limit = limit
        self._lock = threading.Lock()
        self._fds: dict[str, int] = {}
        self._read: set[str] = set()
        self._reads = 0

    def read(self, path: str) -> bytes:
        with self._lock:
            fd = self._fds.get(path)
            if fd is not None:
                try:
                    data = os.pread(fd, _SMALL, 0)
                    if len(data) < _SMALL:
                        self._note(path)
                        return data
                except OSError:
                    pass
                del self._fds[path]
                os.close(fd)
            if len(self._fds) >= self.limit:
                return read_small(path)
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            try:
                data = os.pread(fd, _SMALL, 0)
            except BaseException:
                os.close(fd)
                raise
            if len(data) < _SMALL:
                self._fds[path] = fd
                self._note(path)
                return data
            os.close(fd)
        return read_small(path)  # larger than one read: not a file for holding

    def _note(self, path: str) -> None:
        self._read.add(path)
        self._reads += 1
        if self._reads >= max(256, 2 * len(self._fds)):
            for stale in self._fds.keys() - self._read:
                os.close(self._fds.pop(stale))
            self._read.clear()
            self._reads = 0

    def held(self) -> int:
        with self._lock:
            return len(self._fds)

    def close(self) -> None:
        with self._lock:
            for fd in self._fds.values():
                os.close(fd)
            self._fds.clear()
            self._read.clear()


# the process's one set: a long-lived agent lists the jails again and again
held_files = HeldFiles()
