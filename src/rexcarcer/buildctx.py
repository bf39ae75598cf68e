"""The build context: the ``.rex`` file's directory, seen from the host.

A ``PROVISION COPY`` source is checked before anything is built (it must stay
inside the context directory, through ``..`` and symlinks alike) and hashed for
the step's cache key. When the jail is built by an agent (this host's, over its
UNIX socket, or another host's, over mutual TLS) the client packs the ``.rex``
file and exactly the sources it names into an uncompressed tar, with paths
relative to the context directory; the agent never opens a host path a request
names.

Symlinks. The security issue behind this module says a context's symlinks
should be refused. A link that stays inside the context is content, not an
escape: a ``COPY`` of a tree copies it into the jail *as a link* (jailfs
``copy_into``, never followed on the host), where it means the same thing it
meant beside the ``.rex`` file, and a project with ``current -> v2`` should
build. What can do harm on the host that unpacks a context is a link that
points outside it: a later member written through it, or a COPY source
resolved through it, would reach a host path. So the rule, the same in process
and through either agent (the client checks its tree with the same resolver
before it sends anything, so both doors accept the same contexts):

- a symlink is kept when its target is relative and, resolved component by
  component *through the context's other symlinks* (whatever their order in the
  archive), never climbs above the context directory;
- a symlink with an absolute target, or one that leaves the context, or a
  chain of more than ``MAX_SYMLINKS``, is refused (make such a link with a
  ``PROVISION RUN ln -s`` step instead: it is then made inside the jail).

The archive an agent receives is hostile input. ``unpack`` refuses, before it
writes anything, every member that is an absolute path, has a ``..``
component, lies below a symlink member, changes type (a name seen as a link
and as a file), is a hard link, a device, a fifo or any other special type, and
every symlink the rule above refuses. What passes is extracted with tarfile's
``data`` filter (PEP 706) as well (no owner taken from the archive), keeping
the modes a COPY in process would copy, in a directory only root can enter.
``pack`` writes only regular files, directories and symlinks (a
hard-linked file travels as a file of its own; sockets, fifos and devices are
not copied, in process either).
"""

from __future__ import annotations

import hashlib
import io
import os
import stat
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from rexcarcer.errors import UnsafePath, UsageError
from rexcarcer.jailfs import walk
from rexcarcer.rexfile.ast import Copy, Rexfile

if TYPE_CHECKING:  # imported where used: the CLI of `rex ls` packs nothing
    import tarfile

MAX_CONTEXT = 1 << 30  # bytes; a larger context is refused before it is read
MAX_SYMLINKS = 40  # as Linux's path resolution (path_resolution(7)) and jailfs
LINK_HINT = (
    "a symlink in a COPY tree must be relative and stay inside the directory of the "
    ".rex file; make other links inside the jail with a PROVISION RUN ln -s step"
)
MEMBER_HINT = (
    "a build context holds the .rex file and what its COPY steps name: files, "
    "directories and symlinks inside it, as rex's client packs them"
)


def checked_source(context: Path, src: str) -> Path:
    """A COPY source inside ``context`` after resolving symlinks; the symlinks of
    a directory tree must stay inside it too (``check_tree``)."""
    base = context.resolve()
    path = (base / src).resolve()
    if path != base and base not in path.parents:
        raise UnsafePath(
            f"COPY source {src!r} leaves the directory {base} (through .. or a symlink)",
            hint="copy only files that live beside the .rex file",
        )
    if not path.exists():
        raise UnsafePath(f"COPY source {src!r} does not exist in {base}")
    if path.is_dir():
        check_tree(base, path)
    return path


def copy_sources(rexfile: Rexfile) -> dict[int, Path]:
    """Every COPY source by step number, checked (bad input changes nothing)."""
    out: dict[int, Path] = {}
    for i, step in enumerate(rexfile.steps, 1):
        if isinstance(step, Copy):
            try:
                out[i] = checked_source(rexfile.context_dir, step.src)
            except UnsafePath as exc:  # file:line:col, as the parser's errors
                where = f"{rexfile.display}:{step.pos.line}:{step.pos.col}: "
                raise UnsafePath(where + exc.message, hint=exc.hint) from exc
    return out


def copied(mode: int) -> bool:
    """Whether an entry of a COPY tree is copied: files, directories, symlinks."""
    return stat.S_ISREG(mode) or stat.S_ISDIR(mode) or stat.S_ISLNK(mode)


def content_digest(src: Path) -> str:
    """SHA-256 over the names, modes, link targets and bytes of what a COPY of
    ``src`` copies (the same on the client and on the agent that unpacked it)."""
    h = hashlib.sha256()
    entries = [(".", src)] if not src.is_dir() else [(".", src), *walk(src)]
    for rel, path in entries:
        st = path.lstat()
        if not copied(st.st_mode):
            continue
        # the mode of the top directory is not copied (copy_into makes the target)
        mode = 0 if rel == "." and stat.S_ISDIR(st.st_mode) else stat.S_IMODE(st.st_mode)
        h.update(f"{rel}\0{stat.S_IFMT(st.st_mode)}\0{mode}\0".encode())
        if stat.S_ISLNK(st.st_mode):
            h.update(os.readlink(path).encode())
        elif stat.S_ISREG(st.st_mode):
            with path.open("rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    h.update(chunk)
        h.update(b"\n")
    return h.hexdigest()


# -- symlinks: where they lead ------------------------------------------------------


def link_escapes(
    parent: tuple[str, ...], target: str, readlink: Callable[[tuple[str, ...]], str | None]
) -> str | None:
    """Why a symlink in directory ``parent`` (components below the context root,
    none of them a link) pointing at ``target`` is refused, or None when it stays
    inside. ``readlink`` gives the target of a symlink of the context (None: not
    a link), so a chain through other links is followed as the kernel would."""
    if not target:
        return "is a symlink with an empty target"
    if target.startswith("/"):
        return f"is a symlink to the absolute path {target!r}"
    stack = list(parent)
    todo = target.split("/")
    hops = 0
    while todo:
        part = todo.pop(0)
        if part in ("", "."):
            continue
        if part == "..":
            if not stack:
                return f"is a symlink to {target!r}, which leaves the build context"
            stack.pop()
            continue
        stack.append(part)
        inner = readlink(tuple(stack))
        if inner is None:
            continue
        stack.pop()
        hops += 1
        if hops > MAX_SYMLINKS:
            return f"is a symlink to {target!r}: too many levels of symbolic links"
        if inner.startswith("/"):
            via = "/".join([*stack, part])
            return f"is a symlink to {target!r}, through {via!r} to the absolute path {inner!r}"
        todo = inner.split("/") + todo
    return None


def check_tree(base: Path, tree: Path) -> None:
    """Refuse a symlink below ``tree`` that leaves ``base`` (both resolved)."""

    def readlink(parts: tuple[str, ...]) -> str | None:
        path = base.joinpath(*parts)
        return os.readlink(path) if path.is_symlink() else None

    for _, path in walk(tree):
        if path.is_symlink():
            inside = path.relative_to(base).parts
            why = link_escapes(inside[:-1], os.readlink(path), readlink)
            if why is not None:
                raise UnsafePath(f"{'/'.join(inside)} in the COPY source {why}", hint=LINK_HINT)


# -- packing for an agent ------------------------------------------------------------


def members(rexfile: Rexfile) -> list[tuple[Path, str]]:
    """(host path, name in the archive) of the .rex file and every COPY source."""
    if rexfile.path is None:
        raise UsageError("only a .rex file on disk can be sent to an agent")
    base = rexfile.context_dir.resolve()
    out = [(rexfile.path.resolve(), rexfile.path.name)]
    for src in copy_sources(rexfile).values():
        arc = "." if src == base else src.relative_to(base).as_posix()
        if (src, arc) not in out:
            out.append((src, arc))
    return out


def add_entry(tar: tarfile.TarFile, path: Path, arc: str) -> None:
    """One entry, described from lstat: never a hard link (tarfile's ``add`` makes
    one of a second name of an inode), no owner names from this host."""
    import tarfile

    st = path.lstat()
    info = tarfile.TarInfo(arc)
    info.mode = stat.S_IMODE(st.st_mode)
    info.mtime = int(st.st_mtime)
    if stat.S_ISDIR(st.st_mode):
        info.type = tarfile.DIRTYPE
        tar.addfile(info)
    elif stat.S_ISLNK(st.st_mode):
        info.type, info.linkname = tarfile.SYMTYPE, os.readlink(path)
        tar.addfile(info)
    elif stat.S_ISREG(st.st_mode):
        with path.open("rb") as f:
            info.size = os.fstat(f.fileno()).st_size
            tar.addfile(info, f)


def add_tree(tar: tarfile.TarFile, path: Path, arc: str) -> None:
    """``path`` as ``arc``, and everything below it when it is a directory (links
    are kept as links, never followed)."""
    add_entry(tar, path, arc)
    if path.is_dir() and not path.is_symlink():
        for rel, sub in walk(path):
            add_entry(tar, sub, rel if arc == "." else f"{arc}/{rel}")


def pack(rexfile: Rexfile) -> bytes:
    import tarfile

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path, arc in members(rexfile):
            add_tree(tar, path, arc)
    data = buf.getvalue()
    if len(data) > MAX_CONTEXT:
        raise UsageError(
            f"the build context of {rexfile.display} is {len(data) >> 20} MiB "
            f"(at most {MAX_CONTEXT >> 20} MiB travel to an agent)",
            hint="copy large files with a base or a PROVISION RUN step instead",
        )
    return data


# -- unpacking on an agent ---------------------------------------------------------


def _kind(m: tarfile.TarInfo) -> str:
    if m.isreg():
        return "file"
    if m.isdir():
        return "directory"
    if m.issym():
        return "symlink"
    if m.islnk():
        return "hard link"
    if m.ischr() or m.isblk():
        return "device"
    if m.isfifo():
        return "fifo"
    return "special file"


def _refuse(name: str, why: str, hint: str = MEMBER_HINT) -> UnsafePath:
    return UnsafePath(f"refusing the build context: member {name!r} {why}", hint=hint)


def _parts(m: tarfile.TarInfo) -> tuple[str, ...]:
    if m.name.startswith("/"):
        raise _refuse(m.name, "is an absolute path")
    parts = tuple(p for p in m.name.split("/") if p not in ("", "."))
    if ".." in parts:
        raise _refuse(m.name, "contains '..'")
    return parts


def check_members(members: Iterable[tarfile.TarInfo]) -> None:
    """Refuse the whole archive unless every member is a plain file, directory or
    symlink that stays inside (see the module's docstring). Pure: nothing is read
    from or written to a disk, and the order of the members does not matter."""
    kinds: dict[tuple[str, ...], str] = {}
    links: dict[tuple[str, ...], str] = {}
    named: list[tuple[tuple[str, ...], tarfile.TarInfo]] = []
    for m in members:
        parts, kind = _parts(m), _kind(m)
        if kind == "hard link":
            raise _refuse(m.name, f"is a hard link (to {m.linkname!r})")
        if kind not in ("file", "directory", "symlink"):
            raise _refuse(m.name, f"is a {kind}")
        if kinds.setdefault(parts, kind) != kind:
            raise _refuse(m.name, f"is a {kind} and a {kinds[parts]}")
        if not parts and kind != "directory":
            raise _refuse(m.name, f"makes the context directory itself a {kind}")
        if kind == "symlink":
            links[parts] = m.linkname
        named.append((parts, m))
    for parts, m in named:
        for i in range(1, len(parts)):
            if parts[:i] in links:
                raise _refuse(m.name, f"lies below the symlink {'/'.join(parts[:i])!r}")
        if m.issym():
            why = link_escapes(parts[:-1], m.linkname, links.get)
            if why is not None:
                raise _refuse(m.name, why, LINK_HINT)


def _keep_mode(member: tarfile.TarInfo, dest: str) -> tarfile.TarInfo:
    """tarfile's ``data`` filter, keeping the modes of files and directories, so
    that a COPY through an agent gives the jail (and the cache key) the modes a
    COPY in process gives it. Safe on the agent's host: ``unpack`` makes the
    destination 0700 (its own mode is never taken from the archive), and the
    ``data`` filter takes no owner from the archive (everything is root's)."""
    import tarfile

    checked = tarfile.data_filter(member, dest)
    if member.issym() or not _parts(member):
        return checked
    return checked.replace(mode=member.mode & 0o7777, deep=False)


def unpack(data: bytes, dest: Path, file: str) -> Path:
    """Extract into ``dest`` (an empty directory, made 0700); the path of the .rex
    file. Nothing is written unless every member passes ``check_members``."""
    import tarfile

    file = rexfile_name(file)
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
            check_members(tar.getmembers())
            os.chmod(dest, 0o700)
            tar.extractall(dest, filter=_keep_mode)
    except (tarfile.TarError, OSError) as exc:
        raise UsageError(f"cannot unpack the build context: {exc}") from exc
    path = dest / file
    if path.is_symlink() or not path.is_file():
        raise UsageError(f"the build context has no {file}")
    return path


def unpack_text(data: bytes, path: Path) -> None:
    """Write a .rex file a client sent alone (no COPY sources) as ``path``, in an
    empty directory (made 0700)."""
    os.chmod(path.parent, 0o700)
    try:
        with path.open("xb") as f:
            f.write(data)
    except OSError as exc:
        raise UsageError(f"cannot write the .rex file of the request: {exc}") from exc


def rexfile_name(name: str) -> str:
    """The .rex file's name in a request: one path component."""
    if "/" in name or "\0" in name or name in ("", ".", ".."):
        raise UsageError(f"bad .rex file name {name!r} in the request")
    return name


def unpack_files(data: bytes, dest: Path) -> list[Path]:
    """Extract files a client sent for `rex cp` into ``dest`` (an empty directory,
    tarfile's ``data`` filter); the top-level entries, each to be copied."""
    import tarfile

    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
            tar.extractall(dest, filter="data")
    except (tarfile.TarError, OSError) as exc:
        raise UsageError(f"cannot unpack the files to copy: {exc}") from exc
    return sorted(dest.iterdir())
