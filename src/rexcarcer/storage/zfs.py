"""ZFS through zfs(8): OpenZFS on FreeBSD and Linux, and zfs-fuse (pool v23).

zfs-fuse quirks handled here (notes/linux-testbed.md §1):
- ``destroy``/``rename`` of a mounted filesystem answer "dataset is busy": unmount,
  then retry with backoff (about 2 s);
- no ``zfs list -p`` (``zfs get -Hp`` works), one property per ``zfs set``;
- no lz4/zstd, no ``receive -o``: modern flags only when ``Capabilities`` says so;
- concurrent commands that mount, unmount or remove datasets deadlock the
  daemon: ``zfs destroy`` holds the dataset while its ``rmdir`` of the mountpoint
  waits for a FUSE answer that another command's ioctl blocks (seen with 50
  parallel ``rex up``: zfs processes in D state in ``fuse_lookup``/``do_rmdir``
  for minutes). With ``serial_lock`` (zfs-fuse: no ``/dev/zfs``, see
  ``serial_lock_for``) those commands run one at a time on the machine, under
  an flock; OpenZFS needs none.

Every zfs(8) command runs with a time limit (``timeout``, the ``zfs_timeout``
setting, REX_ZFS_TIMEOUT, 30 s by default): a daemon that stops answering
(zfs-fuse stopped or stuck, a hung pool) would otherwise hang rex for as long
as it lasts. A command past its limit is killed and the step fails with
``ZfsUnresponsive`` (exit 85). 30 s is far above what a command takes here
(zfs-fuse: under a second, a busy destroy retried for about 3 s; OpenZFS
destroys large datasets asynchronously) and short enough to wait for at a
terminal. The wait for the zfs-fuse lock is bounded too (``LOCK_WAITS`` limits:
a holder stuck on the daemon is itself killed after one). ``send`` and
``receive`` stream data for as long as the data takes and have no limit.
"""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import IO

from rexcarcer.errors import CommandFailed, NotFound, OutOfSpace, StorageError, ZfsUnresponsive
from rexcarcer.run import Completed, Runner
from rexcarcer.storage.base import (
    KNOWN_PROPS,
    LAYOUT,
    LOW_SPACE,
    PROP_PREFIX,
    Dataset,
    Snapshot,
    is_space_error,
    space_hint,
)

BUSY_RETRY_SECONDS = 3.0
DEFAULT_TIMEOUT = 30.0  # seconds; the zfs_timeout setting (config.py)
LOCK_WAITS = 10  # the zfs-fuse lock is waited for at most this many timeouts
# subcommands that mount, unmount or remove mountpoints (serialised on zfs-fuse)
MOUNTING = frozenset({"create", "clone", "destroy", "umount", "unmount", "mount", "rename"})
SERIAL_LOCK = Path("/run/rexcarcer/zfs-fuse.lock")  # one zfs-fuse daemon per machine
# The parent datasets whose layout (LAYOUT below them) this process has seen
# whole: `rex agent` opens a storage per request and asks once, not per `rex up`.
# Another rex (or an admin) may destroy the layout behind the agent's back, so a
# command that finds a dataset missing forgets the entry, and a create or clone
# that fails that way after a remembered layout makes the layout and tries again.
LAYOUT_SEEN: set[str] = set()
# Where the layout's datasets were mounted when this process last listed them
# (full name -> mountpoint): a dataset cloned below one inherits its mountpoint
# with its own name appended (zfsconcepts(7), "Mount Points"), so a start asks zfs
# where a new clone is only when it is not mounted there.
KIND_MOUNTS: dict[str, Path] = {}


def serial_lock_for(dev: Path = Path("/dev/zfs")) -> Path | None:
    """The machine-wide lock for zfs-fuse, which has no ``/dev/zfs``; None for OpenZFS."""
    return None if dev.exists() else SERIAL_LOCK


@dataclass(frozen=True, slots=True)
class Capabilities:
    """What this zfs(8) can do. zfs-fuse has no ``zfs version``; OpenZFS has."""

    openzfs: bool

    @property
    def compression(self) -> str:
        return "lz4" if self.openzfs else "on"


def detect_capabilities(runner: Runner, timeout: float | None = DEFAULT_TIMEOUT) -> Capabilities:
    argv = ["zfs", "version"]
    try:
        return Capabilities(openzfs=runner.run(argv, check=False, timeout=timeout).ok)
    except CommandFailed as exc:
        if exc.timed_out:
            raise unresponsive(argv, timeout) from exc
        raise


UNRESPONSIVE_HINT = (
    "check `zpool status` and that ZFS runs (Linux: the zfs-fuse daemon or the zfs "
    "module; FreeBSD: `kldstat -n zfs`), then run the command again (docs/faults.md); "
    "the limit is zfs_timeout (REX_ZFS_TIMEOUT), in seconds"
)


def unresponsive(argv: Sequence[str], timeout: float | None) -> ZfsUnresponsive:
    import shlex

    return ZfsUnresponsive(
        f"the ZFS daemon is not answering: `{shlex.join(argv)}` did not finish in "
        f"{timeout:g} s and was killed",
        hint=UNRESPONSIVE_HINT,
    )


# -- argv builders (pure) ---------------------------------------------------


def _opts(props: Mapping[str, str] | None) -> list[str]:
    out: list[str] = []
    for key, value in (props or {}).items():
        out += ["-o", f"{key}={value}"]
    return out


def user_props(props: Mapping[str, str] | None) -> dict[str, str]:
    return {f"{PROP_PREFIX}{k}": v for k, v in (props or {}).items()}


def clone_argv(full_snapshot: str, full_name: str, props: Mapping[str, str] | None) -> list[str]:
    return ["zfs", "clone", *_opts(user_props(props)), full_snapshot, full_name]


def snapshot_argv(full_snapshot: str) -> list[str]:
    return ["zfs", "snapshot", full_snapshot]


def set_argvs(full: str, props: Mapping[str, str]) -> list[list[str]]:
    """One ``zfs set`` per property (zfs-fuse takes one at a time); an empty value
    is unset with ``zfs inherit`` (zfs(8) refuses ``prop=``)."""
    return [
        ["zfs", "set", f"{key}={value}", full] if value else ["zfs", "inherit", key, full]
        for key, value in user_props(props).items()
    ]


def list_children_argv(full: str, props: Sequence[str]) -> list[str]:
    cols = ",".join(["name", "origin", "mountpoint", *(PROP_PREFIX + p for p in props)])
    return ["zfs", "list", "-H", "-o", cols, "-t", "filesystem", "-r", "-d", "1", full]


def snapshot_details_argv(full: str, props: Sequence[str]) -> list[str]:
    """guid and createtxg of every snapshot two levels down, with rex's properties.

    ``zfs get`` rather than ``zfs list``: zfs-fuse's ``zfs list`` prints the guid
    rounded (``8.39E``) and has no ``-p``; ``zfs get -Hp`` prints it exactly, and
    its source column tells a property set on the snapshot from one it inherits
    from its dataset (zfs-fuse's ``zfs get`` has no ``-t``: datasets are filtered
    out by the parser)."""
    names = ",".join(["guid", "createtxg", *(PROP_PREFIX + p for p in props)])
    return ["zfs", "get", "-Hp", "-r", "-d", "2", "-o", "name,property,value,source", names, full]


def props_below_argv(fulls: Sequence[str], props: Sequence[str]) -> list[str]:
    """The mountpoint and rex's ``props`` of every filesystem one level below each of
    ``fulls``, in one ``zfs get`` (it takes several datasets; zfs-fuse's has no
    ``-t``, so snapshots are left out by the parser)."""
    names = ",".join(["mountpoint", *(PROP_PREFIX + p for p in props)])
    return ["zfs", "get", "-Hp", "-r", "-d", "1", "-o", "name,property,value,source", names,
            *fulls]  # fmt: skip


def tree_argv(full: str | Sequence[str], props: Sequence[str]) -> list[str]:
    """:func:`list_children_argv` and :func:`snapshot_details_argv` in one ``zfs
    get``: every filesystem and snapshot two levels down, with what each needs
    (of one dataset, or of several: zfs get takes several)."""
    names = ",".join(["type", "origin", "mountpoint", "guid", "createtxg",
                      *(PROP_PREFIX + p for p in props)])  # fmt: skip
    fulls = [full] if isinstance(full, str) else list(full)
    return ["zfs", "get", "-Hp", "-r", "-d", "2", "-o", "name,property,value,source", names,
            *fulls]  # fmt: skip


def props_of_argv(fulls: Sequence[str], props: Sequence[str]) -> list[str]:
    """The mountpoint and rex's ``props`` of each of ``fulls``, in one ``zfs get``
    (it prints what it finds and names, on stderr, what does not exist)."""
    names = ",".join(["mountpoint", *(PROP_PREFIX + p for p in props)])
    return ["zfs", "get", "-Hp", "-o", "name,property,value,source", names, *fulls]


# -- parsers of machine output (pure) ---------------------------------------


def parse_get(text: str) -> dict[str, str]:
    """``zfs get -Hp -o property,value ...`` → {property: value}; unset user props
    print ``-`` and are left out."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        prop, _, value = line.partition("\t")
        if prop and value != "-":
            out[prop] = value
    return out


def parse_children(text: str, parent: str, props: Sequence[str]) -> list[Dataset]:
    """Rows of :func:`list_children_argv` below ``parent``, names made relative."""
    prefix = parent + "/"
    out: list[Dataset] = []
    for line in text.splitlines():
        cols = line.split("\t")
        if len(cols) != 3 + len(props) or not cols[0].startswith(prefix):
            continue
        name, origin, mnt = cols[0], cols[1], cols[2]
        rel = name[len(prefix) :]
        if "/" not in rel:  # the kind dataset itself
            continue
        values = {p: v for p, v in zip(props, cols[3:], strict=True) if v != "-"}
        out.append(
            Dataset(
                name=rel,
                mountpoint=Path(mnt) if mnt.startswith("/") else None,
                origin=origin[len(prefix) :] if origin.startswith(prefix) else None,
                props=values,
            )
        )
    return out


def parse_props_below(text: str, parent: str) -> list[Dataset]:
    """Rows of :func:`props_below_argv` → the filesystems two levels below ``parent``
    (``jails/web``), names made relative; a user property counts only when set on
    the dataset itself (source ``local`` or ``received``), never an inherited one."""
    prefix = parent + "/"
    mounts: dict[str, Path | None] = {}
    props: dict[str, dict[str, str]] = {}
    for line in text.splitlines():
        cols = line.split("\t")
        if len(cols) != 4 or "@" in cols[0] or not cols[0].startswith(prefix):
            continue
        name, prop, value, source = cols
        rel = name[len(prefix) :]
        if rel.count("/") != 1:
            continue
        if prop == "mountpoint":
            mounts[rel] = Path(value) if value.startswith("/") else None
        elif prop.startswith(PROP_PREFIX) and source in ("local", "received") and value != "-":
            props.setdefault(rel, {})[prop[len(PROP_PREFIX) :]] = value
    return [Dataset(rel, mnt, None, props.get(rel, {})) for rel, mnt in sorted(mounts.items())]


def parse_tree(text: str, parent: str, kind: str) -> tuple[list[Dataset], list[Snapshot]]:
    """Rows of :func:`tree_argv` → what :func:`parse_children` and
    :func:`parse_snapshot_details` make of their commands' output: the
    filesystems directly under ``kind`` with every rex property they have (set
    or inherited, as ``zfs list`` shows them), and the snapshots with only those
    set on each."""
    prefix, under = parent + "/", f"{kind}/"
    rows: dict[str, dict[str, str]] = {}
    for line in text.splitlines():
        cols = line.split("\t")
        if len(cols) != 4 or not cols[0].startswith(prefix):
            continue
        rel = cols[0][len(prefix) :]
        if "@" not in rel and not (rel.startswith(under) and "/" not in rel[len(under) :]):
            continue  # the kind dataset itself, or deeper filesystems
        rows.setdefault(rel, {})["\0" + cols[1]] = cols[2]
    datasets = [
        Dataset(
            name=rel,
            mountpoint=Path(v["\0mountpoint"]) if v.get("\0mountpoint", "").startswith("/")
            else None,
            origin=v["\0origin"][len(prefix) :] if v.get("\0origin", "").startswith(prefix)
            else None,
            props={k[1 + len(PROP_PREFIX) :]: value for k, value in v.items()
                   if k.startswith("\0" + PROP_PREFIX) and value != "-"},
        )
        for rel, v in rows.items() if "@" not in rel and v.get("\0type") == "filesystem"
    ]  # fmt: skip
    snap_lines = "".join(
        line + "\n" for line in text.splitlines() if "@" in line.partition("\t")[0]
    )
    return datasets, parse_snapshot_details(snap_lines, parent)


def split_tree(text: str, parent: str, kinds: Sequence[str]) -> dict[str, str]:
    """Rows of :func:`tree_argv` of several kinds → the rows of each kind."""
    out: dict[str, list[str]] = {k: [] for k in kinds}
    for line in text.splitlines():
        rel = line.partition("\t")[0][len(parent) + 1 :]
        kind = rel.split("/", 1)[0].split("@", 1)[0]
        if line.startswith(parent + "/") and kind in out:
            out[kind].append(line + "\n")
    return {k: "".join(v) for k, v in out.items()}


def parse_props_of(text: str, parent: str, wanted: Sequence[str]) -> dict[str, Dataset]:
    """Rows of :func:`props_of_argv` for the ``wanted`` names (relative to
    ``parent``); a user property counts only when set on the dataset or snapshot
    itself (source ``local`` or ``received``), as ``get_props``."""
    prefix = parent + "/"
    mounts: dict[str, Path | None] = {}
    props: dict[str, dict[str, str]] = {}
    for line in text.splitlines():
        cols = line.split("\t")
        if len(cols) != 4 or not cols[0].startswith(prefix):
            continue
        name, prop, value, source = cols
        rel = name[len(prefix) :]
        if rel not in wanted:
            continue
        if prop == "mountpoint":
            mounts[rel] = Path(value) if value.startswith("/") else None
        elif prop.startswith(PROP_PREFIX) and source in ("local", "received") and value != "-":
            props.setdefault(rel, {})[prop[len(PROP_PREFIX) :]] = value
    return {rel: Dataset(rel, mnt, None, props.get(rel, {})) for rel, mnt in mounts.items()}


def parse_snapshot_details(text: str, parent: str) -> list[Snapshot]:
    """Rows of :func:`snapshot_details_argv` → snapshots below ``parent``, oldest first."""
    prefix = parent + "/"
    rows: dict[str, dict[str, str]] = {}
    props: dict[str, dict[str, str]] = {}
    for line in text.splitlines():
        cols = line.split("\t")
        if len(cols) != 4 or "@" not in cols[0] or not cols[0].startswith(prefix):
            continue
        name, prop, value, source = cols
        rel = name[len(prefix) :]
        if prop.startswith(PROP_PREFIX):
            # "inherited from DATASET" and "-" (unset) are not the snapshot's own
            if source in ("local", "received") and value != "-":
                props.setdefault(rel, {})[prop[len(PROP_PREFIX) :]] = value
        else:
            rows.setdefault(rel, {})[prop] = value
    out = [
        Snapshot(rel, int(v["guid"]), int(v["createtxg"]), props.get(rel, {}))
        for rel, v in rows.items()
        if v.get("guid", "").isdigit() and v.get("createtxg", "").isdigit()
    ]
    return sorted(out, key=lambda s: (s.createtxg, s.name))


def mounted_at(path: Path) -> bool:
    """Whether a file system other than its parent directory's is mounted at
    ``path`` (each ZFS dataset is one, with a device number of its own)."""
    try:
        return os.stat(path).st_dev != os.stat(path.parent).st_dev
    except OSError:
        return False


# -- the driver ---------------------------------------------------------------

# the zfs subcommands that change nothing (any other ends what listing() read)
READS = frozenset({"get", "list"})


class ZfsStorage:
    def __init__(
        self,
        runner: Runner,
        parent: str,
        *,
        caps: Capabilities | None = None,
        serial_lock: Path | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        layout_seen: set[str] | None = None,
    ) -> None:
        """``layout_seen``: where the layouts seen whole are remembered
        (``LAYOUT_SEEN`` for this process); None: ``ensure_layout`` always looks."""
        self.runner = runner
        self.parent = parent
        self._caps = caps
        self.serial_lock = serial_lock
        self.timeout = timeout
        self.layout_seen = layout_seen
        self._layout_assumed = False  # ensure_layout trusted layout_seen
        # listing(): the kinds it covers, and their trees once read
        self._listing: tuple[str, ...] = ()
        self._listed: dict[str, tuple[list[Dataset], list[Snapshot]]] | None = None
        self._listed_text = ""  # the listing's rows, for props_of
        # what this storage cloned, with the rex properties it gave each
        self._cloned: dict[str, dict[str, str]] = {}

    @contextmanager
    def _serial(self, argv: Sequence[str]) -> Iterator[None]:
        """Hold the machine-wide lock around a mounting command (zfs-fuse only)."""
        if self.serial_lock is None or len(argv) < 2 or argv[1] not in MOUNTING:
            yield
            return
        try:
            self.serial_lock.parent.mkdir(parents=True, exist_ok=True)
            fd = self.serial_lock.open("w")
        except OSError as exc:
            raise StorageError(f"cannot take the zfs-fuse lock {self.serial_lock}: {exc}") from exc
        with fd:
            self._wait_lock(fd, argv)
            yield

    def _wait_lock(self, fd: IO[str], argv: Sequence[str]) -> None:
        """flock(2) with a deadline: polled, since flock has no timeout of its own."""
        deadline = time.monotonic() + LOCK_WAITS * self.timeout
        delay = 0.01
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise ZfsUnresponsive(
                        f"the ZFS daemon is not answering: waited {LOCK_WAITS * self.timeout:g}"
                        f" s for {self.serial_lock} (held by another zfs command) to run "
                        f"`{' '.join(argv)}`",
                        hint=UNRESPONSIVE_HINT,
                    ) from None
                time.sleep(delay)
                delay = min(delay * 2, 0.2)

    def _run(self, argv: list[str], *, check: bool) -> Completed:
        with self._serial(argv):
            try:
                return self.runner.run(argv, check=check, timeout=self.timeout)
            except CommandFailed as exc:
                if exc.timed_out:
                    raise unresponsive(argv, self.timeout) from exc
                raise

    @cached_property
    def caps(self) -> Capabilities:
        return self._caps or detect_capabilities(self.runner, self.timeout)

    def full(self, name: str) -> str:
        if not name or name.startswith(("/", "@")) or ".." in name.split("/"):
            raise StorageError(f"bad dataset name {name!r}")
        return f"{self.parent}/{name}"

    def _zfs(self, *args: str, check: bool = True) -> Completed:
        if args and self._listed is not None and self._changes_listed(args):
            self._listed = None  # what listing() read is read again
        if args and args[0] not in READS and self._cloned:
            for arg in args:  # renamed, destroyed, its properties set: asked again
                self._cloned.pop(arg.removeprefix(f"{self.parent}/"), None)
        try:
            return self._run(["zfs", *args], check=check)
        except CommandFailed as exc:
            if "does not exist" in exc.stderr:
                self._forget_layout()
            # the dataset is the last argument; zfs-fuse reports a full parent
            # filesystem on create/clone as "failed to create mountpoint" only
            if is_space_error(exc.stderr) or (
                "failed to create mountpoint" in exc.stderr and self._full(args[-1])
            ):
                raise OutOfSpace(f"out of space for dataset {args[-1]}: {exc.message}",
                                 hint=space_hint(self.parent)) from exc  # fmt: skip
            raise StorageError(exc.message, hint=exc.hint) from exc

    def _changes_listed(self, args: Sequence[str]) -> bool:
        """Whether zfs ``args`` may change what the listing in force holds: any
        change but a clone, or a property set, of a dataset outside its kinds (a
        jail's clone of an image leaves the images as they were)."""
        if args[0] in READS:
            return False
        if args[0] not in ("clone", "set", "inherit"):
            return True
        under = tuple(f"{self.full(k)}{sep}" for k in self._listing for sep in "/@")
        return args[-1].startswith(under) or args[-1] in map(self.full, self._listing)

    def _full(self, full: str) -> bool:
        parent = full.rsplit("/", 1)[0]
        done = self._run(["zfs", "get", "-Hp", "-o", "value", "available", parent], check=False)
        value = done.stdout.strip()
        return done.ok and value.isdigit() and int(value) < LOW_SPACE

    def _made(self, name: str, action: Callable[[], object]) -> None:
        """Run a create or clone; a dataset it made but could not mount goes again.
        One that failed for a missing dataset after ``ensure_layout`` trusted what
        this process remembered: the layout is made and the command runs again."""
        try:
            action()
        except ZfsUnresponsive:
            raise  # asking whether it exists would wait as long again
        except StorageError as exc:
            if self.exists(name):
                self._zfs("destroy", "-r", self.full(name), check=False)
            if not (self._layout_assumed and "does not exist" in exc.message):
                raise
            self._layout_assumed = False
            self.ensure_layout()
            self._made(name, action)

    def _forget_layout(self) -> None:
        if self.layout_seen is not None:
            self.layout_seen.discard(self.parent)
        for kind in LAYOUT:
            KIND_MOUNTS.pop(self.full(kind), None)

    def ensure_layout(self) -> None:
        if self.layout_seen is not None and self.parent in self.layout_seen:
            self._layout_assumed = True
            return
        self._layout_assumed = False
        self._ensure_layout()
        if self.layout_seen is not None:
            self.layout_seen.add(self.parent)

    def _ensure_layout(self) -> None:
        have = self._zfs("list", "-H", "-o", "name,mountpoint", "-r", "-d", "1", self.parent,
                         check=False)  # fmt: skip
        rows = [line.split("\t") for line in have.stdout.splitlines()] if have.ok else []
        names = {row[0] for row in rows}
        for row in rows:
            if len(row) == 2 and row[1].startswith("/"):
                KIND_MOUNTS[row[0]] = Path(row[1])
        if not have.ok:
            if "dataset does not exist" not in have.stderr:
                raise StorageError(
                    f"cannot read dataset {self.parent}: {have.stderr.strip()}",
                    hint="is zfs running and does the pool exist? try `rex doctor`",
                )
            props = {"compression": self.caps.compression, "atime": "off"}
            self._zfs("create", "-p", *_opts(props), self.parent)
        for kind in LAYOUT:
            if f"{self.parent}/{kind}" not in names:
                self._zfs("create", f"{self.parent}/{kind}")

    @contextmanager
    def listing(self, kinds: Sequence[str]) -> Iterator[None]:
        self._listing, self._listed = tuple(k for k in kinds if k in LAYOUT), None
        try:
            yield
        finally:
            self._listing, self._listed = (), None

    def _listed_tree(self, kind: str) -> tuple[list[Dataset], list[Snapshot]] | None:
        """``kind``'s tree from the listing in force (read now if not yet), or None."""
        if kind not in self._listing:
            return None
        if self._listed is None:
            fulls = [self.full(k) for k in self._listing]
            done = self._zfs(*tree_argv(fulls, KNOWN_PROPS)[1:], check=False)
            if not done.ok:  # a kind is missing (an older layout): each on its own
                self._listing = ()
                return None
            rows = split_tree(done.stdout, self.parent, self._listing)
            self._listed = {k: parse_tree(rows[k], self.parent, k) for k in self._listing}
            self._listed_text = done.stdout
        return self._listed[kind]

    def exists(self, name: str) -> bool:
        listed = self._listed_tree(name.split("/", 1)[0].split("@", 1)[0])
        if listed is not None and (
            any(s.name == name for s in listed[1]) or any(d.name == name for d in listed[0])
        ):
            return True  # seen just now; a name the listing lacks is looked up
        return self._zfs("list", "-H", "-o", "name", "-t", "all", self.full(name), check=False).ok

    def mountpoint(self, name: str) -> Path:
        done = self._zfs("get", "-Hp", "-o", "value", "mountpoint", self.full(name))
        value = done.stdout.strip()
        if not value.startswith("/"):
            raise StorageError(f"dataset {self.full(name)} has no mountpoint ({value})")
        return Path(value)

    def mounted(self, name: str) -> bool:
        done = self._zfs("get", "-H", "-o", "value", "mounted", self.full(name))
        return done.stdout.strip() == "yes"

    def create(self, name: str, *, props: Mapping[str, str] | None = None) -> Path:
        self._made(name, lambda: self._zfs("create", *_opts(user_props(props)), self.full(name)))
        return self.mountpoint(name)

    def clone_argv(
        self, snapshot: str, name: str, props: Mapping[str, str] | None = None
    ) -> list[str]:
        return clone_argv(self.full(snapshot), self.full(name), props)

    def snapshot_argv(self, snapshot: str) -> list[str]:
        return snapshot_argv(self.full(snapshot))

    def set_props_argvs(self, name: str, props: Mapping[str, str]) -> list[list[str]]:
        return set_argvs(self.full(name), props)

    def clone(self, snapshot: str, name: str, *, props: Mapping[str, str] | None = None) -> Path:
        self.clone_only(snapshot, name, props=props)
        return self.mountpoint(name)

    def clone_only(
        self, snapshot: str, name: str, *, props: Mapping[str, str] | None = None
    ) -> None:
        self._made(name, lambda: self._zfs(*self.clone_argv(snapshot, name, props)[1:]))
        self._cloned[name] = {k: v for k, v in (props or {}).items() if v}

    def _clone_mount(self, name: str) -> Path | None:
        """Where clone ``name`` is mounted, when that is where its parent's
        mountpoint puts it (it inherits it: rex gives a clone no mountpoint) and a
        file system other than its parent's is mounted there; else None."""
        kind, _, rest = name.partition("/")
        base = KIND_MOUNTS.get(self.full(kind))
        if base is None or not rest:
            return None
        path = base / rest
        return path if mounted_at(path) else None

    def _known_props(self, names: Sequence[str], props: Sequence[str]) -> dict[str, Dataset] | None:
        """``props_of`` without zfs: each name a clone this storage made (where
        ``_clone_mount`` finds it, with the properties it gave it) or one the
        listing in force holds; None when any name is neither."""
        out: dict[str, Dataset] = {}
        for name in names:
            if name in self._cloned:
                mnt = self._clone_mount(name)
                if mnt is None:
                    return None
                given = self._cloned[name]
                out[name] = Dataset(name, mnt, None, {p: given[p] for p in props if p in given})
                continue
            if self._listed_tree(name.split("/", 1)[0].split("@", 1)[0]) is None:
                return None
            found = parse_props_of(self._listed_text, self.parent, [name]).get(name)
            if found is None:
                return None
            own = {p: v for p, v in found.props.items() if p in props}
            out[name] = Dataset(name, found.mountpoint, None, own)
        return out

    def snapshot(self, snapshot: str) -> None:
        self._zfs(*self.snapshot_argv(snapshot)[1:])

    def snapshots(self, name: str) -> list[str]:
        done = self._zfs(
            "list", "-H", "-o", "name", "-t", "snapshot", "-r", "-d", "1", self.full(name),
            check=False,
        )  # fmt: skip
        prefix = self.parent + "/"
        return [n[len(prefix) :] for n in done.stdout.split() if n.startswith(prefix)]

    def destroy(self, name: str, *, recursive: bool = False, missing_ok: bool = True) -> None:
        full = self.full(name)
        if not self.exists(name):
            if missing_ok:
                return
            raise NotFound(f"dataset {full} does not exist")
        if "@" not in name:
            for child in self._mounted_below(full):
                self._zfs("umount", child, check=False)
        argv = ["zfs", "destroy", *(["-r"] if recursive else []), full]
        self._retry_busy(argv)

    def _mounted_below(self, full: str) -> list[str]:
        done = self._zfs(
            "list", "-H", "-o", "name,mounted", "-t", "filesystem", "-r", full, check=False
        )
        rows = [line.split("\t") for line in done.stdout.splitlines()]
        # deepest first, so that parents unmount after their children
        return sorted((r[0] for r in rows if len(r) == 2 and r[1] == "yes"), reverse=True)

    def _retry_busy(self, argv: list[str]) -> None:
        deadline = time.monotonic() + BUSY_RETRY_SECONDS
        delay = 0.05
        while True:
            done = self._run(argv, check=False)
            if done.ok:
                return
            busy = "busy" in done.stderr
            if not busy or time.monotonic() > deadline:
                raise StorageError(
                    CommandFailed(argv, done.returncode, done.stderr).message,
                    hint="a process may still use the dataset (a running jail?)" if busy else None,
                )
            time.sleep(delay)
            delay = min(delay * 2, 0.4)

    def get_props(self, name: str) -> dict[str, str]:
        done = self._zfs(
            "get", "-Hp", "-s", "local,received", "-o", "property,value", "all", self.full(name)
        )
        return {
            k[len(PROP_PREFIX) :]: v
            for k, v in parse_get(done.stdout).items()
            if k.startswith(PROP_PREFIX)
        }

    def set_props(self, name: str, props: Mapping[str, str]) -> None:
        for argv in self.set_props_argvs(name, props):
            self._zfs(*argv[1:])

    def set_quota(self, name: str, size: int | None) -> None:
        self._zfs("set", f"quota={size if size is not None else 'none'}", self.full(name))

    def used(self, name: str) -> int:
        return self._bytes(name, "used", f"the space {self.full(name)} uses")

    def available(self, name: str) -> int:
        return self._bytes(name, "available", f"the space left to {self.full(name)}")

    def _bytes(self, name: str, prop: str, what: str) -> int:
        """A numeric property in bytes (``zfs get -Hp``: exact, unscaled)."""
        done = self._zfs("get", "-Hp", "-o", "value", prop, self.full(name))
        try:
            return int(done.stdout.strip())
        except ValueError as exc:
            raise StorageError(f"cannot read {what}: {done.stdout.strip()!r}") from exc

    def datasets(self, kind: str) -> list[Dataset]:
        if kind not in LAYOUT:
            raise StorageError(f"unknown dataset kind {kind!r}")
        listed = self._listed_tree(kind)
        if listed is not None:
            return listed[0]
        done = self._zfs(*list_children_argv(self.full(kind), KNOWN_PROPS)[1:], check=False)
        if not done.ok:
            return []
        return parse_children(done.stdout, self.parent, KNOWN_PROPS)

    def tree(self, kind: str) -> tuple[list[Dataset], list[Snapshot]]:
        if kind not in LAYOUT:
            raise StorageError(f"unknown dataset kind {kind!r}")
        listed = self._listed_tree(kind)
        if listed is not None:
            return listed
        done = self._zfs(*tree_argv(self.full(kind), KNOWN_PROPS)[1:], check=False)
        if not done.ok:
            if "does not exist" in done.stderr:
                return [], []
            raise StorageError(f"cannot list the datasets below {self.full(kind)}: "
                               f"{done.stderr.strip()}")  # fmt: skip
        return parse_tree(done.stdout, self.parent, kind)

    def props_of(self, names: Sequence[str], props: Sequence[str]) -> dict[str, Dataset]:
        known = self._known_props(names, props)
        if known is not None:
            return known
        done = self._zfs(*props_of_argv([self.full(n) for n in names], props)[1:], check=False)
        found = parse_props_of(done.stdout, self.parent, names)
        # zfs get exits 1 when a name does not exist, and prints the others
        missing = [n for n in names if n not in found]
        if not done.ok and not (missing and "does not exist" in done.stderr):
            raise StorageError(f"cannot read the properties of {', '.join(names)}: "
                               f"{done.stderr.strip()}")  # fmt: skip
        return found

    def props_below(self, kinds: Sequence[str], props: Sequence[str]) -> list[Dataset]:
        fulls = [self.full(k) for k in kinds if k in LAYOUT]
        done = self._zfs(*props_below_argv(fulls, props)[1:], check=False)
        if not done.ok and "does not exist" in done.stderr and len(fulls) > 1:
            # one of the kinds is missing (an older layout): the others one by one
            outs = [self._zfs(*props_below_argv([f], props)[1:], check=False) for f in fulls]
            return [d for o in outs if o.ok for d in parse_props_below(o.stdout, self.parent)]
        if not done.ok:
            if "does not exist" in done.stderr:
                return []
            raise StorageError(f"cannot read the properties below {', '.join(fulls)}: "
                               f"{done.stderr.strip()}")  # fmt: skip
        return parse_props_below(done.stdout, self.parent)

    def snapshot_details(self, name: str) -> list[Snapshot]:
        done = self._zfs(*snapshot_details_argv(self.full(name), KNOWN_PROPS)[1:], check=False)
        if not done.ok:
            if "does not exist" in done.stderr:
                return []
            raise StorageError(f"cannot list the snapshots of {self.full(name)}: {done.stderr}")
        return parse_snapshot_details(done.stdout, self.parent)

    def send(self, snapshot: str, out: IO[bytes], *, since: str | None = None) -> None:
        # zfs(8): `send -i snapshot`; zfs-fuse has no -c/-L/-w, so none are used
        incremental = ["-i", self.full(since)] if since else []
        argv = ["zfs", "send", *incremental, self.full(snapshot)]
        done = self.runner.run(argv, check=False, stdout=out)
        if not done.ok:
            raise StorageError(CommandFailed(argv, done.returncode, done.stderr).message)

    def receive(self, name: str, stream: IO[bytes]) -> None:
        argv = ["zfs", "receive", "-u", self.full(name)]
        done = self.runner.run(argv, check=False, stdin=stream)
        if not done.ok:
            if "does not exist" in done.stderr:
                self._forget_layout()
            raise StorageError(
                CommandFailed(argv, done.returncode, done.stderr).message,
                hint="is it a ZFS send stream?",
            )

    def mount(self, name: str) -> None:
        done = self._zfs("get", "-H", "-o", "value", "mounted", self.full(name))
        if done.stdout.strip() != "yes":
            self._zfs("mount", self.full(name))

    def promote(self, name: str) -> None:
        # zfs-promote(8): "Promote a clone file system to no longer be dependent
        # on its origin snapshot"
        self._zfs("promote", self.full(name))

    def rename(self, name: str, new: str) -> None:
        # zfs-fuse answers "dataset is busy" for a mounted filesystem (and has no
        # `rename -u`): unmount it, rename, mount it again.
        old_full, new_full = self.full(name), self.full(new)
        mounted = "@" not in name and self.mounted(name)
        if mounted:
            self._retry_busy(["zfs", "umount", old_full])
        self._retry_busy(["zfs", "rename", old_full, new_full])
        if mounted:
            self._zfs("mount", new_full)
