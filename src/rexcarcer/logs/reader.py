"""Reading a jail's log file: the last N lines, and following it (``rex logs -f``).

``tail`` reads backwards in blocks, so ``-n 20`` of a large file costs a few
reads. ``follow`` polls (no inotify/kqueue dependency): it prints what was
appended, starts over when the file is truncated, and reopens it when it was
rotated (a new inode at the path), after draining the old one.
"""

from __future__ import annotations

import io
import os
import time
from collections.abc import Callable
from pathlib import Path

BLOCK = 1 << 16
POLL = 0.1


def tail(path: Path, n: int | None) -> tuple[list[str], int]:
    """The last ``n`` lines (all when None) and the offset after them."""
    with path.open("rb") as f:
        end = f.seek(0, os.SEEK_END)
        if n is None:
            f.seek(0)
            data = f.read(end)
        else:
            data = _last_lines(f.fileno(), end, n)
    text = data.decode(errors="replace")
    lines = text.splitlines(keepends=True)
    return (lines if n is None else lines[-n:] if n > 0 else []), end


def _last_lines(fd: int, end: int, n: int) -> bytes:
    pos, data = end, b""
    while pos > 0 and data.count(b"\n") <= n:
        step = min(BLOCK, pos)
        pos -= step
        data = os.pread(fd, step, pos) + data
    return data


def follow(
    path: Path,
    offset: int,
    emit: Callable[[str], None],
    *,
    stop: Callable[[], bool] = lambda: False,
    poll: float = POLL,
) -> None:
    """Emit every line appended to ``path`` after ``offset`` until ``stop()``."""
    f = _open(path)
    ino = os.fstat(f.fileno()).st_ino if f else None
    pos = offset
    partial = b""
    try:
        while not stop():
            if f is not None:
                size = os.fstat(f.fileno()).st_size
                if size < pos:  # truncated: start over
                    pos, partial = 0, b""
                chunk = os.pread(f.fileno(), max(size - pos, 0), pos)
                pos += len(chunk)
                partial = _emit_lines(partial + chunk, emit)
            current = _inode(path)
            if current is not None and current != ino:  # rotated, or created
                if f is not None:
                    f.close()
                f, ino, pos, partial = _open(path), current, 0, b""
                continue
            time.sleep(poll)
    finally:
        if f is not None:
            f.close()


def _emit_lines(data: bytes, emit: Callable[[str], None]) -> bytes:
    *lines, rest = data.split(b"\n")
    for line in lines:
        emit(line.decode(errors="replace") + "\n")
    return rest


def _open(path: Path) -> io.BufferedReader | None:
    try:
        return path.open("rb")
    except OSError:
        return None


def _inode(path: Path) -> int | None:
    try:
        return path.stat().st_ino
    except OSError:
        return None
