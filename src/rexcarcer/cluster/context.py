"""The build context that travels to the host a jail is placed on: the ``.rex``
file and its COPY sources, as an uncompressed tar with paths relative to the
``.rex`` file's directory (the context directory).

Unpacking uses tarfile's ``data`` filter (PEP 706): no absolute paths, nothing
outside the destination, no device files, no setuid bits. Only the sources
the file names travel, never the whole directory.
"""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

from rexcarcer.cluster import AgentApiError
from rexcarcer.engine import files
from rexcarcer.rexfile.ast import Copy, Rexfile

MAX_CONTEXT = 1 << 30  # bytes; a larger request is refused before it is read


def members(rexfile: Rexfile) -> list[tuple[Path, str]]:
    """(host path, name in the archive) of the .rex file and every COPY source."""
    if rexfile.path is None:
        raise AgentApiError("only a .rex file on disk can be sent to another host")
    base = rexfile.context_dir.resolve()
    out = [(rexfile.path.resolve(), rexfile.path.name)]
    for step in rexfile.steps:
        if isinstance(step, Copy):
            src = files.checked_source(rexfile.context_dir, step.src)
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
        raise AgentApiError(
            f"the build context of {rexfile.path} is {len(data) >> 20} MiB "
            f"(at most {MAX_CONTEXT >> 20} MiB travel to another host)",
            hint="copy large files with a base or a PROVISION RUN step instead",
        )
    return data


def unpack(data: bytes, dest: Path, rexfile_name: str) -> Path:
    """Extract into ``dest`` (an empty directory); the path of the .rex file."""
    if "/" in rexfile_name or rexfile_name in ("", ".", ".."):
        raise AgentApiError(f"bad .rex file name {rexfile_name!r} in the request")
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
            tar.extractall(dest, filter="data")
    except (tarfile.TarError, OSError) as exc:
        raise AgentApiError(f"cannot unpack the build context: {exc}") from exc
    path = dest / rexfile_name
    if not path.is_file():
        raise AgentApiError(f"the build context has no {rexfile_name}")
    return path
