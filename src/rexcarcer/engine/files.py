"""Files inside a jail root, written without ever leaving it.

A path inside the jail is resolved the way the jail would see it: an absolute
symlink in the image points inside the jail root (``/etc -> /usr/local/etc``
stays in the jail); a ``..`` that would climb above the root is refused, so a
hostile image cannot make a ``COPY`` or a written file land on the host.
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

from rexcarcer.errors import UnsafePath

MAX_SYMLINKS = 40


def resolve_in_root(root: Path, inside: str) -> Path:
    """The host path of ``inside`` (absolute, jail-relative), following symlinks
    inside the jail only. Components that do not exist yet are kept as named."""
    todo = list(PurePosixPath(inside).parts)
    if not todo or todo[0] != "/":
        raise UnsafePath(f"{inside!r} is not an absolute path inside the jail")
    todo.pop(0)
    stack: list[str] = []
    hops = 0
    while todo:
        part = todo.pop(0)
        if part in ("", "."):
            continue
        if part == "..":
            if not stack:
                raise UnsafePath(f"{inside!r} resolves to a path outside the jail root")
            stack.pop()
            continue
        here = root.joinpath(*stack, part)
        if here.is_symlink():
            hops += 1
            if hops > MAX_SYMLINKS:
                raise UnsafePath(f"too many levels of symbolic links resolving {inside!r}")
            target = PurePosixPath(os.readlink(here))
            if target.is_absolute():
                stack = []
                todo = list(target.parts[1:]) + todo
            else:
                todo = list(target.parts) + todo
            continue
        stack.append(part)
    return root.joinpath(*stack)


def _mkdirs(root: Path, inside: str) -> Path:
    """Create ``inside`` (and its parents) as directories in the jail."""
    path = resolve_in_root(root, inside)
    if path.exists() and not path.is_dir():
        raise UnsafePath(f"{inside} exists in the jail and is not a directory")
    rel = path.relative_to(root)
    cur = root
    for part in rel.parts:
        cur = cur / part
        if not cur.exists():
            cur.mkdir(mode=0o755)
    return path


def write_file(root: Path, inside: str, data: bytes, *, mode: int = 0o644) -> None:
    """Write ``data`` at ``inside``; the last component is never followed."""
    parent = PurePosixPath(inside).parent
    host_parent = _mkdirs(root, str(parent))
    target = host_parent / PurePosixPath(inside).name
    if target.is_symlink():
        target.unlink()
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, mode)
    try:
        os.fchmod(fd, mode)
        os.write(fd, data)
    finally:
        os.close(fd)


def checked_source(context: Path, src: str) -> Path:
    """A COPY source inside ``context`` after resolving symlinks."""
    base = context.resolve()
    path = (base / src).resolve()
    if path != base and base not in path.parents:
        raise UnsafePath(
            f"COPY source {src!r} leaves the directory {base} (through .. or a symlink)",
            hint="copy only files that live beside the .rex file",
        )
    if not path.exists():
        raise UnsafePath(f"COPY source {src!r} does not exist in {base}")
    return path


def _walk(src: Path) -> Iterator[tuple[str, Path]]:
    """(relative path, host path) of every entry below ``src``, sorted, no links followed."""
    for dirpath, dirnames, filenames in os.walk(src, followlinks=False):
        dirnames.sort()
        rel_dir = os.path.relpath(dirpath, src)
        for name in sorted(dirnames + filenames):
            rel = name if rel_dir == "." else f"{rel_dir}/{name}"
            yield rel, Path(dirpath) / name


def content_digest(src: Path) -> str:
    """SHA-256 over the names, modes, link targets and bytes of ``src``."""
    h = hashlib.sha256()
    entries = [(".", src)] if not src.is_dir() else [(".", src), *_walk(src)]
    for rel, path in entries:
        st = path.lstat()
        h.update(f"{rel}\0{stat.S_IFMT(st.st_mode)}\0{stat.S_IMODE(st.st_mode)}\0".encode())
        if stat.S_ISLNK(st.st_mode):
            h.update(os.readlink(path).encode())
        elif stat.S_ISREG(st.st_mode):
            with path.open("rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    h.update(chunk)
        h.update(b"\n")
    return h.hexdigest()


def copy_into(root: Path, src: Path, dst: str) -> None:
    """Copy a file or directory tree from the host into the jail at ``dst``.

    A file goes to ``dst``, or into it when ``dst`` ends in ``/`` or is a
    directory in the jail; a directory's contents go into ``dst``."""
    if src.is_dir():
        _mkdirs(root, dst)
        for rel, path in _walk(src):
            _copy_entry(root, path, f"{dst.rstrip('/')}/{rel}")
        return
    target = dst
    if dst.endswith("/") or resolve_in_root(root, dst).is_dir():
        target = f"{dst.rstrip('/')}/{src.name}"
    _copy_entry(root, src, target)


def _copy_entry(root: Path, path: Path, inside: str) -> None:
    st = path.lstat()
    if stat.S_ISDIR(st.st_mode):
        _mkdirs(root, inside)
        resolve_in_root(root, inside).chmod(stat.S_IMODE(st.st_mode))
    elif stat.S_ISLNK(st.st_mode):
        parent = _mkdirs(root, str(PurePosixPath(inside).parent))
        link = parent / PurePosixPath(inside).name
        if link.is_symlink() or link.exists():
            link.unlink()
        # copied as a link, never followed: inside the jail it points inside the jail
        os.symlink(os.readlink(path), link)
    elif stat.S_ISREG(st.st_mode):
        write_file(root, inside, path.read_bytes(), mode=stat.S_IMODE(st.st_mode))
    # sockets, fifos and devices are not copied
