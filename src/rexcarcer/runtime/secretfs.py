"""Where a jail's secrets go, for both runtimes: ``/run/secrets/<name>``, mode
0400, owned by root, on a tmpfs of the jail's own that is mounted before the
jail's ``/etc/rc`` runs and goes away with the jail. Nothing of a secret is
ever written to the jail's dataset: only the empty mount point is.

::

    Linux    the runtime's SETUP mounts the tmpfs in the jail's mount namespace
             before pivot_root; rex writes the files through /proc/<init>/root
             while the jail's init waits on a FIFO (runtime/linux.py)
    FreeBSD  rex mounts the tmpfs before `jail -c` and writes the files, and
             unmounts it after `jail -r` (runtime/freebsd_extras.py)

The files are written through jailfs (the one jail-root module), after a
check that the directory really is a tmpfs mount, so a jail image whose
``/run`` is a symlink sends them to the jail's own tmpfs or nowhere.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from rexcarcer import jailfs
from rexcarcer.errors import RuntimeBackendError, UnsafePath
from rexcarcer.runtime.base import Secret

SECRETS_DIR = "/run/secrets"
FILE_MODE = 0o400
# A secret is a password, a key or a certificate chain, not a data file.
MAX_SECRET = 64 << 10
# The file system holds every secret of a jail; tmpfs takes memory only for
# what is written (tmpfs(5), Documentation/filesystems/tmpfs.rst "size").
TMPFS_SIZE = "8m"
TMPFS_BYTES = 8 << 20
# nosuid/nodev/noexec: a secret is data, never a program or a device.
LINUX_OPTIONS = f"mode=0755,size={TMPFS_SIZE},nosuid,nodev,noexec"
FREEBSD_OPTIONS = f"rw,nosuid,noexec,mode=755,size={TMPFS_SIZE}"


def inside_path(root: Path) -> str:
    """``/run/secrets`` as the jail resolves it (its own symlinks followed inside
    its root), without creating anything: what the start command names."""
    return "/" + str(jailfs.resolve_in_root(root, SECRETS_DIR).relative_to(root))


def mountpoint(root: Path) -> str:
    """Make the (empty) mount point in the jail's root and return its path inside
    the jail. The jail does not run yet, so nothing can swap it meanwhile."""
    try:
        jailfs.mkdirs(root, SECRETS_DIR)
        return inside_path(root)
    except OSError as exc:
        raise UnsafePath(f"cannot make {SECRETS_DIR} in the jail: {exc}") from exc


def check_sizes(secrets: Sequence[Secret]) -> None:
    """Refuse, before anything starts, secrets that cannot fit (names only in errors)."""
    for s in secrets:
        if len(s.data) > MAX_SECRET:
            raise RuntimeBackendError(
                f"secret {s.name} is {len(s.data)} bytes; the limit is {MAX_SECRET}",
                hint="a secret holds a password, key or certificate; put data in a VOLUME",
            )
    # each file takes at least one page
    total = sum(len(s.data) + 4096 for s in secrets)
    if total > TMPFS_BYTES:
        raise RuntimeBackendError(
            f"the jail's {len(secrets)} secrets take {total} bytes; {SECRETS_DIR} holds "
            f"{TMPFS_BYTES}",
            hint="use fewer or smaller secrets",
        )


def files(secrets: Sequence[Secret]) -> list[tuple[str, bytes, int]]:
    return [(s.name, s.data, FILE_MODE) for s in secrets]


def write(root: Path, inside: str, secrets: Sequence[Secret]) -> None:
    """Write every secret into directory ``inside`` of the jail at ``root`` (a
    path or ``/proc/self/fd/N`` of the jail's root); the directory is made
    root's, 0755, and each file 0400."""
    try:
        jailfs.replace_files(root, inside, files(secrets))
    except OSError as exc:
        raise RuntimeBackendError(
            f"cannot write the jail's secrets into {inside}: {exc.strerror or exc}"
        ) from exc


def _unescape(field: str) -> str:
    # proc(5): mountinfo escapes space, tab, newline and backslash as \\ooo
    out, i = [], 0
    while i < len(field):
        if field[i] == "\\" and field[i + 1 : i + 4].isdigit():
            out.append(chr(int(field[i + 1 : i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def mount_type(mountinfo: str, point: str) -> str | None:
    """The file system type of the mount at ``point`` (the last one mounted
    there is the one seen) in /proc/PID/mountinfo text, or None."""
    found = None
    for line in mountinfo.splitlines():
        fields = line.split(" ")
        try:
            sep = fields.index("-", 6)
            where, fstype = _unescape(fields[4]), fields[sep + 1]
        except (ValueError, IndexError):
            continue
        if where == point:
            found = fstype
    return found


# -- FreeBSD: rex mounts and unmounts the tmpfs itself --------------------------------


def freebsd_mount_argv(directory: Path) -> list[str]:
    # tmpfs(5): "mode", "size" (with a k/m/g suffix); mount(8) -t, -o
    return ["mount", "-t", "tmpfs", "-o", FREEBSD_OPTIONS, "tmpfs", str(directory)]


def freebsd_umount_argv(directory: str) -> list[str]:
    # -f: a process of a removed jail can no longer hold it; jail -r ran first
    return ["umount", "-f", directory]


def tmpfs_below(mount_p: str, root: Path) -> list[str]:
    """The tmpfs mount points below ``root`` in ``mount -p`` output (fstab(5)
    lines: device, mount point, type, ...), deepest first. Read from the
    kernel's table, not by resolving a path the jail may have changed."""
    prefix = str(root).rstrip("/") + "/"
    out = []
    for line in mount_p.splitlines():
        fields = line.split()
        if len(fields) >= 3 and fields[2] == "tmpfs" and fields[1].startswith(prefix):
            out.append(fields[1])
    return sorted(out, key=len, reverse=True)
