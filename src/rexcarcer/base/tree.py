"""Make a base's tree equal to a new one, rewriting only what changed.

A new version of a local base (``rex base import DIR NAME`` of a base that
exists) is the same dataset with the new tree in it, snapshotted: then ``zfs
send -i @old @new`` carries only the blocks that changed, and an increment of a
small change to a large base is small. Copying the whole tree over it (``cp
-a``, ``tar -x``) would write every block again; ZFS (without dedup) would see a
new base. So a file whose type, size, modification time, mode and owner match
is left alone (rsync's quick check), its metadata is fixed in place when only
that differs, and everything else is replaced, created or removed. Times are
compared to the second: zfs-fuse keeps whole seconds only (a file copied there
by ``cp -a`` has the source's second, not its nanoseconds), so a file whose
size and second match but whose nanoseconds do not is compared by content.

Hard links are kept (a FreeBSD base links ``/rescue`` ~150 times to one binary):
the files of one source inode become links to one file. File flags (FreeBSD's
``schg`` on ``/lib/libc.so.7``, …) are cleared before a change and copied after,
where the OS has them. No symlink in the destination is ever followed: entries
are replaced, never written through.
"""

from __future__ import annotations

import os
import shutil
import stat
from collections.abc import Callable
from pathlib import Path

from rexcarcer.errors import StorageError

# BSD file flags (chflags(2)): a feature the os module has or not, not an OS branch
_LCHFLAGS: Callable[[Path, int], None] | None = getattr(os, "lchflags", None)
_Links = dict[tuple[int, int], Path]


def _flags(st: os.stat_result) -> int:
    flags: int = getattr(st, "st_flags", 0)
    return flags


def sync_tree(src: Path, dst: Path) -> None:
    """Make the directory ``dst`` hold exactly what ``src`` holds."""
    try:
        _sync_dir(src, dst, {})
        _meta(src.lstat(), dst)
    except OSError as exc:
        raise StorageError(
            f"cannot update the base's tree from {src}: {exc.strerror or exc} "
            f"({exc.filename or dst})"
        ) from exc


def _sync_dir(src: Path, dst: Path, links: _Links) -> None:
    want = {e.name: e for e in os.scandir(src)}
    for name in sorted(set(os.listdir(dst)) - want.keys()):
        _remove(dst / name)
    for name in sorted(want):
        _sync_entry(Path(want[name].path), dst / name, links)


def _sync_entry(src: Path, dst: Path, links: _Links) -> None:
    st = src.lstat()
    cur = _lstat(dst)
    kind = stat.S_IFMT(st.st_mode)
    if cur is not None and stat.S_IFMT(cur.st_mode) != kind:
        _remove(dst)
        cur = None
    if stat.S_ISDIR(st.st_mode):
        if cur is None:
            os.mkdir(dst, 0o700)
        _sync_dir(src, dst, links)
        _meta(st, dst)  # after its entries, so that their changes leave its mtime alone
    elif stat.S_ISLNK(st.st_mode):
        target = os.readlink(src)
        if cur is None or os.readlink(dst) != target:
            if cur is not None:
                _remove(dst)
            os.symlink(target, dst)
        _meta(st, dst)
    elif stat.S_ISREG(st.st_mode):
        _sync_file(src, st, dst, cur, links)
    elif stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode) or stat.S_ISFIFO(st.st_mode):
        if cur is None or cur.st_rdev != st.st_rdev:
            if cur is not None:
                _remove(dst)
            os.mknod(dst, st.st_mode, st.st_rdev)
        _meta(st, dst)
    # sockets are not copied (cp -a cannot either)


def _sync_file(
    src: Path, st: os.stat_result, dst: Path, cur: os.stat_result | None, links: _Links
) -> None:
    key = (st.st_dev, st.st_ino)
    first = links.get(key) if st.st_nlink > 1 else None
    if first is not None:  # another name of a file already in place
        if cur is None or not os.path.samestat(cur, first.lstat()):
            if cur is not None:
                _remove(dst)
            os.link(first, dst, follow_symlinks=False)
        return
    if cur is None or not _unchanged(src, st, dst, cur):
        if cur is not None:
            _remove(dst)
        shutil.copyfile(src, dst, follow_symlinks=False)
    elif cur.st_nlink > 1 and st.st_nlink == 1:
        # the same content, but linked to other names that change on their own
        tmp = dst.with_name(f".{dst.name}.rex-unlink")
        shutil.copyfile(src, tmp, follow_symlinks=False)
        _unflag(dst)
        os.replace(tmp, dst)
    _meta(st, dst)
    if st.st_nlink > 1:
        links[key] = dst


def _unchanged(src: Path, st: os.stat_result, dst: Path, cur: os.stat_result) -> bool:
    if cur.st_size != st.st_size or _second(cur) != _second(st):
        return False
    return cur.st_mtime_ns == st.st_mtime_ns or _same_content(src, dst)


def _second(st: os.stat_result) -> int:
    return st.st_mtime_ns // 1_000_000_000


def _same_time(cur: os.stat_result, st: os.stat_result) -> bool:
    """Equal, or ``cur`` is ``st`` truncated to the second (zfs-fuse)."""
    exact = cur.st_mtime_ns == st.st_mtime_ns
    return exact or (cur.st_mtime_ns % 1_000_000_000 == 0 and _second(cur) == _second(st))


def _same_content(a: Path, b: Path) -> bool:
    with a.open("rb") as fa, b.open("rb") as fb:
        while True:
            ca, cb = fa.read(1 << 20), fb.read(1 << 20)
            if ca != cb:
                return False
            if not ca:
                return True


def _meta(st: os.stat_result, dst: Path) -> None:
    """Owner, mode, modification time and flags of ``st`` onto ``dst`` (never
    following it), only where they differ: an unchanged file is not touched."""
    cur = dst.lstat()
    link = stat.S_ISLNK(st.st_mode)
    owner = (cur.st_uid, cur.st_gid) != (st.st_uid, st.st_gid)
    mode = not link and stat.S_IMODE(cur.st_mode) != stat.S_IMODE(st.st_mode)
    # the modification time only: reading the source moves its access time
    mtime = not _same_time(cur, st) and (not link or os.utime in os.supports_follow_symlinks)
    if not (owner or mode or mtime) and _flags(cur) == _flags(st):
        return
    _unflag(dst, cur)
    if owner:
        os.chown(dst, st.st_uid, st.st_gid, follow_symlinks=False)
    if mode:
        os.chmod(dst, stat.S_IMODE(st.st_mode))
    if mtime:
        os.utime(dst, ns=(st.st_atime_ns, st.st_mtime_ns), follow_symlinks=False)
    if _LCHFLAGS is not None and _flags(st):
        _LCHFLAGS(dst, _flags(st))


def _unflag(dst: Path, cur: os.stat_result | None = None) -> None:
    """Clear immutable/append-only flags so that ``dst`` can change."""
    if _LCHFLAGS is not None and _flags(cur if cur is not None else dst.lstat()):
        _LCHFLAGS(dst, 0)


def _lstat(path: Path) -> os.stat_result | None:
    try:
        return path.lstat()
    except FileNotFoundError:
        return None


def _remove(path: Path) -> None:
    st = path.lstat()
    _unflag(path, st)
    if stat.S_ISDIR(st.st_mode):
        for name in os.listdir(path):
            _remove(path / name)
        os.rmdir(path)
    else:
        os.unlink(path)
