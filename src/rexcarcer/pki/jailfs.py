"""Reading and replacing rex's identity files inside a jail root, race-free.

``engine/files.resolve_in_root`` resolves a jail path the way the jail sees it.
The identity is also renewed in *running* jails (``rex ca renew``), where root
in the jail could swap a directory for a symlink between that resolution and
the write; an absolute symlink would then be followed by the host's kernel, on
the host. So the directory is opened one component at a time with
``O_NOFOLLOW`` from the jail root, and every file operation is relative to that
directory's descriptor: a swapped component makes the write fail, never escape.
Files are written under a temporary name and renamed over the old ones, so a
reader never sees half a key, and a hard link planted in the jail is replaced,
not written through.
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Iterator, Sequence
from pathlib import Path, PurePosixPath

from rexcarcer.engine import files
from rexcarcer.errors import UnsafePath

MAX_READ = 1 << 16
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


@contextlib.contextmanager
def jail_dir(root: Path, inside: str, *, create: bool = True) -> Iterator[int]:
    """A descriptor of directory ``inside`` of the jail, made (0755, root) if needed."""
    rel = files.resolve_in_root(root, inside).relative_to(root)
    fd = os.open(root, _DIR_FLAGS)
    try:
        for part in rel.parts:
            if create:
                with contextlib.suppress(FileExistsError):
                    os.mkdir(part, 0o755, dir_fd=fd)
            try:
                nfd = os.open(part, _DIR_FLAGS, dir_fd=fd)
            except OSError as exc:
                raise UnsafePath(f"{inside} in the jail is not a plain directory: {exc}") from exc
            os.close(fd)
            fd = nfd
        yield fd
    finally:
        os.close(fd)


def _own(fd: int, mode: int) -> None:
    if os.geteuid() == 0:
        os.fchown(fd, 0, 0)
    os.fchmod(fd, mode)


def replace_files(root: Path, inside: str, entries: Sequence[tuple[str, bytes, int]]) -> None:
    """Write each ``(name, data, mode)`` into jail directory ``inside`` (owned by root,
    not writable by others), each file replaced atomically."""
    with jail_dir(root, inside) as dfd:
        _own(dfd, 0o755)
        for name, data, mode in entries:
            tmp = f".{name}.rex-new"
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp, dir_fd=dfd)
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
            fd = os.open(tmp, flags, mode, dir_fd=dfd)
            try:
                _own(fd, mode)
                os.write(fd, data)
            finally:
                os.close(fd)
            os.replace(tmp, name, src_dir_fd=dfd, dst_dir_fd=dfd)


def read_small(root: Path, inside: str, limit: int = MAX_READ) -> bytes | None:
    """The bytes of regular file ``inside`` in the jail, or None when it is missing,
    not a regular file, too large or not reachable inside the jail."""
    path = PurePosixPath(inside)
    try:
        with jail_dir(root, str(path.parent), create=False) as dfd:
            flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
            fd = os.open(path.name, flags, dir_fd=dfd)
            try:
                st = os.fstat(fd)
                if not stat.S_ISREG(st.st_mode) or st.st_size > limit:
                    return None
                return os.read(fd, limit)
            finally:
                os.close(fd)
    except (OSError, UnsafePath):
        return None


def stat_small(root: Path, inside: str) -> os.stat_result | None:
    """lstat of ``inside`` in the jail (never following its last component), or None."""
    path = PurePosixPath(inside)
    try:
        with jail_dir(root, str(path.parent), create=False) as dfd:
            return os.stat(path.name, dir_fd=dfd, follow_symlinks=False)
    except (OSError, UnsafePath):
        return None
