"""Files inside a jail root, read and written without ever leaving it.

A path inside the jail is resolved the way the jail sees it: an absolute
symlink in the image points inside the jail root (``/etc -> /usr/local/etc``
stays in the jail); a ``..`` that would climb above the root is refused, so a
hostile image cannot make a ``COPY`` or a written file land on the host.

Root inside a *running* jail can also swap a directory for a symlink between
that resolution and the write, and an absolute symlink would then be followed
by the host's kernel, on the host. So every operation opens the directory one
component at a time with ``O_NOFOLLOW`` from the jail root and works relative
to that directory's descriptor: a swapped component makes the operation fail,
never escape. Files are written under a temporary name and renamed over the
old ones, so a reader never sees half a file and a hard link planted in the
jail is replaced, not written through.

This is the only module that writes into a jail root.
"""

from __future__ import annotations

import contextlib
import contextvars
import errno
import os
import secrets
import stat
from collections.abc import Iterator, Sequence
from pathlib import Path, PurePosixPath
from typing import IO, TYPE_CHECKING

from rexcarcer.errors import UnsafePath

if TYPE_CHECKING:  # imported where a tar is written: most commands write none
    import tarfile

MAX_SYMLINKS = 40
MAX_READ = 1 << 16
CHUNK = 1 << 20
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_ROOT_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
_NEW_FILE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


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
            todo = list(target.parts[1:] if target.is_absolute() else target.parts) + todo
            if target.is_absolute():
                stack = []
            continue
        stack.append(part)
    return root.joinpath(*stack)


# kept_open(): per thread (the agent serves requests on threads), the
# directories opened so far, by (jail root, path inside)
_KEPT: contextvars.ContextVar[dict[tuple[str, str], int] | None] = contextvars.ContextVar(
    "jailfs_kept", default=None
)


@contextlib.contextmanager
def kept_open(root: Path) -> Iterator[None]:
    """Within: each directory of jail ``root`` that this module opens stays open
    and serves the next file written or read there, one walk per directory
    instead of one per file (on zfs-fuse every step of a walk is a round trip to
    the daemon). A kept descriptor still names a directory of the jail's tree,
    whatever the jail renames meanwhile, so rex never leaves it; it is meant for
    rex's own writes before a start, when nothing of the jail runs."""
    kept: dict[tuple[str, str], int] = {}
    token = _KEPT.set(kept)
    try:
        yield
    finally:
        _KEPT.reset(token)
        for fd in kept.values():
            os.close(fd)


@contextlib.contextmanager
def jail_dir(root: Path, inside: str, *, create: bool = True) -> Iterator[int]:
    """A descriptor of directory ``inside`` of the jail, made (0755) if needed."""
    kept = _KEPT.get()
    if kept is not None and (str(root), inside) in kept:
        yield kept[str(root), inside]
        return
    fd = _open_jail_dir(root, inside, create)
    if kept is not None:
        kept[str(root), inside] = fd
        yield fd
        return
    try:
        yield fd
    finally:
        os.close(fd)


def _open_jail_dir(root: Path, inside: str, create: bool) -> int:
    parts = PurePosixPath(inside).parts
    if not parts or parts[0] != "/":
        raise UnsafePath(f"{inside!r} is not an absolute path inside the jail")
    if ".." in parts:
        # resolve_in_root drops a missing component that a ".." of the path
        # itself undoes (lexically): resolved first, nothing of it is made
        return _walk(root, inside, list(resolve_in_root(root, inside).relative_to(root).parts),
                     create, follow=False)  # fmt: skip
    return _walk(root, inside, list(parts[1:]), create, follow=True)


def _walk(root: Path, inside: str, todo: list[str], create: bool, *, follow: bool) -> int:
    """Open ``todo`` from the jail root one directory at a time, never through a
    symlink (O_NOFOLLOW). With ``follow``, a symlink met on the way is resolved
    as the jail sees it (resolve_in_root's rules: an absolute target starts
    again at the jail root, a ".." never climbs above it), so the path is
    walked once: each directory is opened, and read as a link only when it is
    not one (on zfs-fuse every call is a round trip to the daemon)."""
    # The root itself is rex's to name, never the jail's, and may be a magic
    # link (/proc/self/fd/N: the root of a running jail, held open by rex), so
    # it is the one component opened without O_NOFOLLOW.
    stack = [os.open(root, _ROOT_FLAGS)]
    hops = 0
    try:
        while todo:
            part = todo.pop(0)
            if part in ("", "."):
                continue
            if part == "..":
                if len(stack) == 1:
                    raise UnsafePath(f"{inside!r} resolves to a path outside the jail root")
                os.close(stack.pop())
                continue
            opened = _open_dir(stack[-1], part, inside, create, follow=follow)
            if isinstance(opened, int):
                stack.append(opened)
                continue
            hops += 1
            if hops > MAX_SYMLINKS:
                raise UnsafePath(f"too many levels of symbolic links resolving {inside!r}")
            target = PurePosixPath(opened)
            todo[:0] = target.parts[1:] if target.is_absolute() else target.parts
            if target.is_absolute():
                while len(stack) > 1:
                    os.close(stack.pop())
        return stack.pop()
    finally:
        for fd in stack:
            os.close(fd)


def _open_dir(fd: int, part: str, inside: str, create: bool, *, follow: bool = False) -> int | str:
    """Open directory ``part`` of ``fd`` (never through a symlink: O_NOFOLLOW),
    made first when missing and ``create``; with ``follow``, a symlink's target
    instead. Opened before any mkdir or readlink: the directories rex writes
    into nearly always exist."""
    try:
        return os.open(part, _DIR_FLAGS, dir_fd=fd)
    except FileNotFoundError as exc:
        if not create:
            raise UnsafePath(f"{inside} in the jail is not a plain directory: {exc}") from exc
    except OSError as exc:
        # O_NOFOLLOW | O_DIRECTORY on a symlink: ENOTDIR (ELOOP without O_DIRECTORY)
        if follow and exc.errno in (errno.ENOTDIR, errno.ELOOP):
            with contextlib.suppress(OSError):
                return os.readlink(part, dir_fd=fd)
        raise UnsafePath(f"{inside} in the jail is not a plain directory: {exc}") from exc
    with contextlib.suppress(FileExistsError):  # made meanwhile: opened as any other
        os.mkdir(part, 0o755, dir_fd=fd)
    try:
        return os.open(part, _DIR_FLAGS, dir_fd=fd)
    except OSError as exc:
        raise UnsafePath(f"{inside} in the jail is not a plain directory: {exc}") from exc


def _own(fd: int, mode: int) -> None:
    """Owned by root (when rex is root) with exactly ``mode``. A file rex just
    made usually is already (a directory's set-group-ID bit or the umask can
    say otherwise), and on zfs-fuse each change is a round trip to the daemon."""
    st = os.fstat(fd)
    if os.geteuid() == 0 and (st.st_uid, st.st_gid) != (0, 0):
        os.fchown(fd, 0, 0)
    if stat.S_IMODE(st.st_mode) != mode:
        os.fchmod(fd, mode)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _replace_at(dfd: int, name: str, data: bytes | IO[bytes], mode: int, size: int = 0) -> None:
    """Write ``name`` in directory ``dfd`` through a fresh temporary file: ``data``,
    or ``size`` bytes read from the stream ``data``."""
    tmp = f".{name}.rex-{secrets.token_hex(4)}"
    fd = os.open(tmp, _NEW_FILE, mode, dir_fd=dfd)
    try:
        try:
            _own(fd, mode)
            if isinstance(data, bytes):
                _write_all(fd, data)
            else:
                _copy_n(data, fd, size)
        finally:
            os.close(fd)
        os.replace(tmp, name, src_dir_fd=dfd, dst_dir_fd=dfd)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp, dir_fd=dfd)
        raise


def _copy_n(src: IO[bytes], fd: int, size: int) -> None:
    while size:
        chunk = src.read(min(size, CHUNK))
        if not chunk:
            raise UnsafePath(f"a file ended {size} bytes early in the stream")
        _write_all(fd, chunk)
        size -= len(chunk)


def _split(inside: str) -> tuple[str, str]:
    path = PurePosixPath(inside)
    if path.name in ("", ".", ".."):
        raise UnsafePath(f"{inside!r} does not name a file")
    return str(path.parent), path.name


def write_file(root: Path, inside: str, data: bytes, *, mode: int = 0o644) -> None:
    """Write ``data`` at ``inside`` (owned by root); a symlink or hard link found
    there is replaced, never followed. Missing parent directories are made."""
    parent, name = _split(inside)
    with jail_dir(root, parent) as dfd:
        _replace_at(dfd, name, data, mode)


def replace_files(root: Path, inside: str, entries: Sequence[tuple[str, bytes, int]]) -> None:
    """Write each ``(name, data, mode)`` into jail directory ``inside`` (owned by
    root, not writable by others), each file replaced atomically."""
    with jail_dir(root, inside) as dfd:
        _own(dfd, 0o755)
        for name, data, mode in entries:
            _replace_at(dfd, name, data, mode)


def mkdirs(root: Path, inside: str, *, mode: int | None = None) -> None:
    """Create directory ``inside`` and its parents; set its mode when given."""
    with jail_dir(root, inside) as dfd:
        if mode is not None:
            os.fchmod(dfd, mode)


def symlink(root: Path, inside: str, target: str) -> None:
    """Make ``inside`` a symlink to ``target`` (replacing a non-directory)."""
    parent, name = _split(inside)
    with jail_dir(root, parent) as dfd:
        with contextlib.suppress(FileNotFoundError):
            st = os.stat(name, dir_fd=dfd, follow_symlinks=False)
            if stat.S_ISDIR(st.st_mode):
                raise UnsafePath(f"{inside} is a directory in the jail; not replacing it")
            os.unlink(name, dir_fd=dfd)
        os.symlink(target, name, dir_fd=dfd)


def is_dir(root: Path, inside: str) -> bool:
    """Whether ``inside`` is a directory as the jail sees it."""
    try:
        with jail_dir(root, inside, create=False):
            return True
    except (OSError, UnsafePath):
        return False


def read_small(root: Path, inside: str, limit: int = MAX_READ) -> bytes | None:
    """The bytes of regular file ``inside`` in the jail, or None when it is missing,
    not a regular file, too large or not reachable inside the jail."""
    parent, name = str(PurePosixPath(inside).parent), PurePosixPath(inside).name
    try:
        with jail_dir(root, parent, create=False) as dfd:
            flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
            fd = os.open(name, flags, dir_fd=dfd)
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
    parent, name = str(PurePosixPath(inside).parent), PurePosixPath(inside).name
    try:
        with jail_dir(root, parent, create=False) as dfd:
            return os.stat(name, dir_fd=dfd, follow_symlinks=False)
    except (OSError, UnsafePath):
        return None


# -- copying a host tree in (PROVISION COPY) ------------------------------------------


def walk(src: Path) -> Iterator[tuple[str, Path]]:
    """(relative path, host path) of every entry below ``src``, sorted, no links followed."""
    for dirpath, dirnames, filenames in os.walk(src, followlinks=False):
        dirnames.sort()
        rel_dir = os.path.relpath(dirpath, src)
        for name in sorted(dirnames + filenames):
            rel = name if rel_dir == "." else f"{rel_dir}/{name}"
            yield rel, Path(dirpath) / name


def copy_into(root: Path, src: Path, dst: str) -> None:
    """Copy a file or directory tree from the host into the jail at ``dst``.

    A file goes to ``dst``, or into it when ``dst`` ends in ``/`` or is a
    directory in the jail; a directory's contents go into ``dst``."""
    if src.is_dir():
        mkdirs(root, dst)
        for rel, path in walk(src):
            _copy_entry(root, path, f"{dst.rstrip('/')}/{rel}")
        return
    target = dst
    if dst.endswith("/") or is_dir(root, dst):
        target = f"{dst.rstrip('/')}/{src.name}"
    _copy_entry(root, src, target)


def _copy_entry(root: Path, path: Path, inside: str) -> None:
    st = path.lstat()
    if stat.S_ISDIR(st.st_mode):
        mkdirs(root, inside, mode=stat.S_IMODE(st.st_mode))
    elif stat.S_ISLNK(st.st_mode):
        # copied as a link, never followed: inside the jail it points inside the jail
        symlink(root, inside, os.readlink(path))
    elif stat.S_ISREG(st.st_mode):
        write_file(root, inside, path.read_bytes(), mode=stat.S_IMODE(st.st_mode))
    # sockets, fifos and devices are not copied


# -- copying out of a jail (rex cp NAME:PATH ...) ---------------------------------------

MAX_EXPORT = 1 << 30  # bytes of file data one `rex cp` out of a jail carries


def export_tar(root: Path, inside: str, out: IO[bytes], *, limit: int = MAX_EXPORT) -> None:
    """Write file or tree ``inside`` of the jail as an uncompressed tar to ``out``.

    Everything is opened relative to directory descriptors walked with
    ``O_NOFOLLOW`` from the jail root, so root in a running jail cannot turn a
    component into a symlink that makes rex read a host file; a symlink in the
    tree is stored as a link (its target as text, never followed); devices,
    fifos and sockets are left out."""
    parent, name = _split(inside) if inside.rstrip("/") else ("/", ".")
    import tarfile

    with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        budget = [limit]
        with jail_dir(root, parent, create=False) as dfd:
            _export_entry(tar, dfd, name, PurePosixPath(inside).name or ".", budget)


def _export_entry(tar: tarfile.TarFile, dfd: int, name: str, arc: str, budget: list[int]) -> None:
    import tarfile

    st = os.stat(name, dir_fd=dfd, follow_symlinks=False)
    info = tarfile.TarInfo(arc)
    info.mode, info.mtime = stat.S_IMODE(st.st_mode), int(st.st_mtime)
    if stat.S_ISLNK(st.st_mode):
        info.type, info.linkname = tarfile.SYMTYPE, os.readlink(name, dir_fd=dfd)
        tar.addfile(info)
    elif stat.S_ISREG(st.st_mode):
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dfd)
        with os.fdopen(fd, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            budget[0] -= size
            if budget[0] < 0:
                raise UnsafePath(
                    f"more than {MAX_EXPORT >> 20} MiB to copy out of the jail",
                    hint="copy a smaller part, or snapshot a volume instead",
                )
            info.size = size
            tar.addfile(info, f)
    elif stat.S_ISDIR(st.st_mode):
        info.type = tarfile.DIRTYPE
        tar.addfile(info)
        sub = os.open(name, _DIR_FLAGS, dir_fd=dfd)
        try:
            for child in sorted(os.listdir(sub)):
                _export_entry(tar, sub, child, f"{arc}/{child}", budget)
        finally:
            os.close(sub)


# -- copying a tar stream in (rex cp SRC NAME:PATH) --------------------------------------


def import_tar(root: Path, dst: str, stream: IO[bytes], *, limit: int = MAX_EXPORT) -> int:
    """Unpack the uncompressed tar ``stream`` into the jail member by member, as
    cp(1) copies: its one top entry goes into ``dst`` when ``dst`` is a
    directory in the jail (or ends in ``/``), else becomes ``dst``; the bytes of
    file data written.

    Every path is resolved inside the jail (as every write here). A member that
    is absolute, has ``..``, lies outside the archive's top entry or below a
    symlink the archive made, a hard link or a special file is refused: the
    archive is the client's, and only files, directories and symlinks travel.
    Files are owned by root, with the modes the archive gives (no set-id bits)."""
    into = dst.endswith("/") or is_dir(root, dst)
    base = dst.rstrip("/") or ""
    top: str | None = None
    links: set[tuple[str, ...]] = set()
    written = 0
    import tarfile  # here only: most commands never read an archive

    with tarfile.open(fileobj=stream, mode="r|") as tar:
        for m in tar:
            parts = _member_parts(m.name)
            top = top or parts[0]
            if parts[0] != top or any(parts[:i] in links for i in range(1, len(parts))):
                raise UnsafePath(f"{m.name!r}: a copy is one tree; nothing below a symlink")
            rel = parts if into else parts[1:]
            target = "/".join([base, *rel]) if rel else dst
            mode = m.mode & 0o777
            if m.isdir():
                mkdirs(root, target, mode=mode)
            elif m.issym():
                symlink(root, target, m.linkname)
                links.add(parts)
            elif m.isreg():
                written += m.size
                if written > limit:
                    raise UnsafePath(f"more than {limit >> 20} MiB to copy into the jail")
                src = tar.extractfile(m)
                assert src is not None
                parent, name = _split(target)
                with jail_dir(root, parent) as dfd:
                    _replace_at(dfd, name, src, mode, m.size)
            else:
                raise UnsafePath(f"{m.name!r} is neither a file, a directory nor a symlink")
    return written


def _member_parts(name: str) -> tuple[str, ...]:
    path = PurePosixPath(name)
    parts = tuple(p for p in path.parts if p not in ("", "."))
    if path.is_absolute() or not parts or ".." in parts:
        raise UnsafePath(f"{name!r} is not a relative path inside the copy")
    return parts
