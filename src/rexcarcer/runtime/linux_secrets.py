"""Linux: putting a jail's secrets in place while its init waits (runtime/linux.py
SETUP and INIT make the tmpfs and the FIFO; runtime/secretfs.py the files).

The order, for a jail with SECRET lines:

1. SETUP (rex's script, in the new namespaces, before the pivot) mounts a tmpfs
   on the jail's /run/secrets and makes the FIFO ``/dev/.rex-go`` in the jail's
   private /dev, then pivots into the jail's root and execs INIT;
2. INIT's first act is to open the FIFO and read one line: no other process of
   the jail exists yet;
3. rex opens ``/proc/<init>`` once, waits until the init's root is the jail's
   root (the pivot is done) and the FIFO has its reader (opening the write end
   with O_NONBLOCK fails with ENXIO until then, fifo(7)), checks in the init's
   mountinfo that /run/secrets is a tmpfs, writes the files through jailfs,
   and writes "go";
4. INIT runs rex's rc.pre and the jail's /etc/rc.

If rex dies before step 3 ends, the FIFO's write end closes, INIT reads end of
file and exits: the jail never runs /etc/rc without its secrets.
"""

from __future__ import annotations

import errno
import os
import time
from pathlib import Path

from rexcarcer.errors import RuntimeBackendError
from rexcarcer.runtime import procfs, secretfs
from rexcarcer.runtime.base import JailSpec

# The FIFO rex releases the jail's init through once its secrets are written.
GO_FIFO = "dev/.rex-go"


_FIFO_RETRY = {errno.ENOENT, errno.ENXIO}  # not pivoted yet / init not reading yet


def deliver_secrets(spec: JailSpec, ipid: int, start: int, inside: str, *, timeout: float) -> None:
    """Write the jail's secrets into its tmpfs, then let its init go on.

    /proc/<init> is opened once and everything is read relative to that
    descriptor: it names that process and no other, so a recycled PID cannot
    redirect the files (proc(5): a /proc/PID directory of a process that has
    exited answers ESRCH)."""
    try:
        procfd = os.open(f"/proc/{ipid}", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as exc:
        raise RuntimeBackendError("the jail's init exited before its secrets were written") from exc
    try:
        st = procfs.parse_stat(_read_at(procfd, "stat"))
        if st.starttime != start:
            raise RuntimeBackendError("the jail's init exited before its secrets were written")
        rootfd, fifo = _open_go(procfd, spec.root, ipid, timeout)
        try:
            if secretfs.mount_type(_read_at(procfd, "mountinfo"), inside) != "tmpfs":
                raise RuntimeBackendError(
                    f"{inside} in jail {spec.name} is not the tmpfs rex mounted; its secrets "
                    "are not written",
                    hint="is /run a symbolic link in the image?",
                )
            secretfs.write(Path(f"/proc/self/fd/{rootfd}"), inside, spec.secrets)
            os.write(fifo, b"go\n")
        finally:
            os.close(fifo)
            os.close(rootfd)
    except OSError as exc:
        raise RuntimeBackendError(
            f"cannot deliver the secrets of jail {spec.name}: {exc.strerror or exc}"
        ) from exc
    finally:
        os.close(procfd)


def _read_at(dirfd: int, name: str) -> str:
    fd = os.open(name, os.O_RDONLY | os.O_CLOEXEC, dir_fd=dirfd)
    try:
        chunks = []
        while chunk := os.read(fd, 65536):
            chunks.append(chunk)
        return b"".join(chunks).decode(errors="replace")
    finally:
        os.close(fd)


def _open_go(procfd: int, root: Path, ipid: int, timeout: float) -> tuple[int, int]:
    """(the jail's root, the write end of its FIFO), once init has pivoted into
    ``root`` and waits on the FIFO."""
    want = os.stat(root)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rootfd = os.open("root", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=procfd)
        try:
            st = os.fstat(rootfd)
            if (st.st_dev, st.st_ino) == (want.st_dev, want.st_ino):
                flags = os.O_WRONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC
                fifo = os.open(GO_FIFO, flags, dir_fd=rootfd)
                return rootfd, fifo
        except OSError as exc:
            if exc.errno not in _FIFO_RETRY:
                os.close(rootfd)
                raise
        os.close(rootfd)
        if not procfs.alive(ipid):
            raise RuntimeBackendError("the jail's init exited before its secrets were written")
        time.sleep(0.001)
    raise RuntimeBackendError(
        f"the jail's init did not wait for its secrets within {timeout:.0f} s"
    )
