"""The build context: the ``.rex`` file's directory, seen from the host.

A ``PROVISION COPY`` source is checked before anything is built (it must stay
inside the context directory, through ``..`` and symlinks alike) and hashed for
the step's cache key. When the jail is built by an agent (this host's, over its
UNIX socket, or another host's, over mutual TLS) the client packs the ``.rex``
file and exactly the sources it names into an uncompressed tar, with paths
relative to the context directory; the agent never opens a host path a request
names. Unpacking uses tarfile's ``data`` filter (PEP 706): no absolute paths,
nothing outside the destination, no device files, no setuid bits.
"""

from __future__ import annotations

import hashlib
import io
import os
import stat
import tarfile
from pathlib import Path

from rexcarcer.errors import UnsafePath, UsageError
from rexcarcer.jailfs import walk
from rexcarcer.rexfile.ast import Copy, Rexfile

MAX_CONTEXT = 1 << 30  # bytes; a larger context is refused before it is read


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


def content_digest(src: Path) -> str:
    """SHA-256 over the names, modes, link targets and bytes of ``src``."""
    h = hashlib.sha256()
    entries = [(".", src)] if not src.is_dir() else [(".", src), *walk(src)]
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


def pack(rexfile: Rexfile) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path, arc in members(rexfile):
            tar.add(path, arcname=arc, recursive=True)
    data = buf.getvalue()
    if len(data) > MAX_CONTEXT:
        raise UsageError(
            f"the build context of {rexfile.display} is {len(data) >> 20} MiB "
            f"(at most {MAX_CONTEXT >> 20} MiB travel to an agent)",
            hint="copy large files with a base or a PROVISION RUN step instead",
        )
    return data


def unpack(data: bytes, dest: Path, rexfile_name: str) -> Path:
    """Extract into ``dest`` (an empty directory); the path of the .rex file."""
    if "/" in rexfile_name or rexfile_name in ("", ".", ".."):
        raise UsageError(f"bad .rex file name {rexfile_name!r} in the request")
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
            tar.extractall(dest, filter="data")
    except (tarfile.TarError, OSError) as exc:
        raise UsageError(f"cannot unpack the build context: {exc}") from exc
    path = dest / rexfile_name
    if not path.is_file():
        raise UsageError(f"the build context has no {rexfile_name}")
    return path


def unpack_files(data: bytes, dest: Path) -> list[Path]:
    """Extract files a client sent for `rex cp` into ``dest`` (an empty directory,
    tarfile's ``data`` filter); the top-level entries, each to be copied."""
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
            tar.extractall(dest, filter="data")
    except (tarfile.TarError, OSError) as exc:
        raise UsageError(f"cannot unpack the files to copy: {exc}") from exc
    return sorted(dest.iterdir())
