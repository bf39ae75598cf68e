"""Local bases: ``bases/<name>@<version>``, made from a directory or tarball
(again for each new version), found, listed and removed (a published base
becomes a local one once received). versions.py has the layout of versions."""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from rexcarcer.base import versions
from rexcarcer.base.manifest import NAME
from rexcarcer.base.tree import sync_tree
from rexcarcer.base.versions import TEMP_PREFIX
from rexcarcer.errors import CommandFailed, Conflict, NotFound, StorageError, UsageError
from rexcarcer.host import Host
from rexcarcer.model.base import BaseInfo
from rexcarcer.state.records import list_jails

BASE_NAME = NAME  # one rule for local names and published ones
__all__ = ["TEMP_PREFIX"]  # re-exported: receive.py and tests name it here
_VERSION_LINE = re.compile(r'^USERLAND_VERSION="([^"]+)"', re.M)
_FINGERPRINTS = re.compile(r"^[0-9a-f]{64}(,[0-9a-f]{64})*$")


def check_base_name(name: str) -> str:
    if not BASE_NAME.match(name) or name in (".", ".."):
        raise UsageError(
            f"bad base name {name!r}",
            hint="use letters, digits, '.', '_' and '-', starting with a letter or digit",
        )
    return name


def freebsd_version(root: Path) -> str | None:
    """USERLAND_VERSION from the root's /bin/freebsd-version (a sh script), if any."""
    try:
        text = (root / "bin" / "freebsd-version").read_text(errors="replace")
    except OSError:
        return None
    m = _VERSION_LINE.search(text)
    return m.group(1) if m else None


def split_ref(ref: str) -> tuple[str, str | None]:
    """``NAME`` or ``NAME@VERSION``, both checked."""
    name, at, version = ref.partition("@")
    check_base_name(name)
    if at:
        check_base_name(version)
    return name, version if at else None


def find_base(host: Host, name: str, version: str | None = None) -> BaseInfo:
    """The base's current version, or ``version``, with the list of its versions."""
    check_base_name(name)
    info = versions.lookup(host, name)
    if info is None:
        if not host.storage.exists(f"bases/{name}"):
            raise NotFound(
                f"base {name!r} does not exist on this host",
                hint=f"import one with `rex base import DIR {name}` or name a URL in BASE",
            )
        raise NotFound(
            f"base {name!r} is incomplete (no snapshot)",
            hint=f"remove it with `rex base rm {name}` and import it again",
        )
    return info if version is None else versions.at_version(info, version)


def list_bases(host: Host) -> list[BaseInfo]:
    """Every base (its current version, with all its versions)."""
    return versions.all_bases(host)


def received(info: BaseInfo) -> bool:
    """Whether the base's versions come from a signed publication (zfs receive):
    its signer is a list of certificate fingerprints."""
    return bool(_FINGERPRINTS.match(info.props.get("signer", "")))


def import_base(host: Host, source: Path, name: str, *, version: str | None = None) -> BaseInfo:
    """Make ``bases/<name>@<version>`` from a directory or a tarball: a new base,
    or a new version of a base imported before."""
    check_base_name(name)
    if not source.exists():
        raise NotFound(f"{source} does not exist", hint="give a directory or a tar archive")
    origin = str(source.resolve())
    if host.storage.exists(f"bases/{name}"):
        return add_version(host, source, name, version=version, origin=origin)
    return create_base(host, source, name, version=version, origin=origin)


def create_base(
    host: Host,
    source: Path,
    name: str,
    *,
    version: str | None = None,
    origin: str,
    props: Mapping[str, str] | None = None,
    need_osrelease: bool = False,
) -> BaseInfo:
    """Fill a new ``bases/<name>`` from a directory or tarball and snapshot it at
    ``version`` (default: its freebsd-version, else a timestamp); ``props`` are
    recorded beside ``version``, ``id``, ``origin``, ``osrelease`` and ``size``."""
    check_base_name(name)
    ds = f"bases/{name}"
    host.storage.ensure_layout()
    with host.lock(f"base-{name}"):
        if host.storage.exists(ds):
            raise Conflict(f"base {name!r} already exists", hint=f"rex base rm {name}")
        host.progress.step(f"Creating base {name} from {source}")
        mnt = host.storage.create(ds)
        try:
            _fill(host, source, mnt)
            osrelease = freebsd_version(mnt)
            if need_osrelease and not osrelease:
                raise NotFound(
                    f"{source} has no /bin/freebsd-version",
                    hint="is it a FreeBSD release's base.txz?",
                )
            version = version or osrelease or time.strftime("%Y%m%d%H%M%S")
            own = {"id": uuid.uuid4().hex, "origin": origin, "osrelease": osrelease or "",
                   "size": str(tree_size(mnt)), **(props or {})}  # fmt: skip
            host.storage.set_props(ds, {"version": version, **own})
            host.storage.snapshot(f"{ds}@{version}")
            host.storage.set_props(f"{ds}@{version}", {**versions.own_props(own), "complete": "1"})
        except BaseException:
            host.storage.destroy(ds, recursive=True)
            raise
    return find_base(host, name)


def add_version(
    host: Host, source: Path, name: str, *, version: str | None, origin: str
) -> BaseInfo:
    """A new version of a local base: its dataset updated to the tree at ``source``
    (only what changed is written, base/tree.py) and snapshotted, so that ``zfs
    send -i`` from the old version carries only the change. The older versions
    stay, and so do the jails and images cloned from them."""
    with host.lock(f"base-{name}"):
        info = find_base(host, name)
        if received(info):
            raise Conflict(
                f"base {name!r} is fetched from {info.props.get('url') or 'a publisher'}: its "
                "versions come from there",
                hint="import the tree under another name, or fetch the new version",
            )
        ds = info.snapshot.partition("@")[0]
        tip = versions.tip(host, ds)
        if tip is None or tip.name != info.snapshot:
            raise Conflict(
                f"base {name!r}: {ds} has snapshots after the current version {info.version}",
                hint=f"rex base rm {name} and import it again",
            )
        if not host.storage.mounted(ds):  # its mountpoint would be a directory of bases/
            raise StorageError(f"base {name!r} ({ds}) is not mounted",
                               hint=f"zfs mount {host.storage.parent}/{ds}")  # fmt: skip
        mnt = host.storage.mountpoint(ds)
        with _unpacked(host, source) as tree:
            version = version or freebsd_version(tree) or time.strftime("%Y%m%d%H%M%S")
            if info.at(version) is not None or host.storage.exists(f"{ds}@{version}"):
                raise Conflict(f"base {name!r} already has a version {version!r}",
                               hint="give the new version a name with --version")  # fmt: skip
            host.progress.step(f"Updating base {name} to version {version} from {source}")
            versions.keep_own_props(host, info)
            sync_tree(tree, mnt)
        host.storage.snapshot(f"{ds}@{version}")
        own = {"id": uuid.uuid4().hex, "origin": origin,
               "osrelease": freebsd_version(mnt) or "", "size": str(tree_size(mnt))}  # fmt: skip
        versions.record(host, name, f"{ds}@{version}", own, {})
    return find_base(host, name)


@contextmanager
def _unpacked(host: Host, source: Path) -> Iterator[Path]:
    """``source`` as a directory: itself, or a tarball unpacked beside the state
    directory for as long as it is needed."""
    if source.is_dir():
        yield source
        return
    host.config.root.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix="import-", dir=host.config.root))
    try:
        scratch.chmod(0o755)  # what a new dataset's root has, unless the archive says
        _fill(host, source, scratch)
        yield scratch
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def tree_size(root: Path) -> int:
    """Bytes of the files under ``root`` (as ``du --apparent-size`` counts them)."""
    total = 0
    for dirpath, _dirs, names in os.walk(root):
        for n in names:
            try:
                total += os.lstat(os.path.join(dirpath, n)).st_size
            except OSError:
                continue
    return total


def _fill(host: Host, source: Path, mnt: Path) -> None:
    if source.is_dir():
        argv = ["cp", "-a", f"{source}/.", f"{mnt}/"]
    else:
        argv = ["tar", "-x", "-p", "-f", str(source), "-C", str(mnt)]
    try:
        host.runner.run(argv)
    except CommandFailed as exc:
        raise StorageError(f"cannot copy {source} into the base: {exc.stderr}") from exc


def remove_base(host: Host, name: str, users: list[str]) -> None:
    """Remove every version of the base, and the cached images built on them."""
    info = find_base(host, name)
    if users:
        raise Conflict(
            f"base {name!r} is used by jails: {', '.join(sorted(users))}",
            hint="destroy those jails first",
        )
    _remove_images(host, {v.id for v in info.versions})
    for ds in sorted(versions.base_datasets(host, name), reverse=True):  # bases/<name> last
        host.storage.destroy(ds, recursive=True)


def remove_version(host: Host, name: str, version: str) -> None:
    """``rex base rm NAME@VERSION``: an older version, when no jail uses it (its
    cached images go with it)."""
    with host.lock(f"base-{name}"):
        info = find_base(host, name, version)
        if info.is_current:
            raise Conflict(
                f"{name}@{version} is the current version of base {name!r}",
                hint=f"`rex base rm {name}` removes the base with all its versions",
            )
        users = jails_on_version(host, info)
        if users:
            raise Conflict(f"{name}@{version} is used by jails: {', '.join(users)}",
                           hint="destroy them, or update them to the current version")  # fmt: skip
        _remove_images(host, {info.id})
        host.storage.destroy(info.snapshot)
        ds = info.snapshot.partition("@")[0]
        if ds != f"bases/{name}" and not host.storage.snapshots(ds):
            host.storage.destroy(ds, recursive=True)


def _remove_images(host: Host, ids: set[str]) -> None:
    images = [i for i in host.storage.datasets("images") if i.props.get("base") in ids]
    # deepest first: a step's image is a clone of the one before it
    for image in sorted(images, key=lambda i: -int(i.props.get("depth", "0"))):
        host.storage.destroy(image.name, recursive=True)


def jails_using(host: Host, info: BaseInfo) -> list[str]:
    """Jails whose BASE names this base: by name, or by the URL it was fetched from."""
    refs = {info.name} | ({info.props["url"]} if info.props.get("url") else set())
    out = []
    for rec in list_jails(host.store):
        if rec.base in refs or _url_base(rec.base) in refs:
            out.append(rec.name)
    return sorted(out)


def jails_on_version(host: Host, info: BaseInfo) -> list[str]:
    """Jails cloned from this version: from its snapshot, or from an image built
    on it (images carry the id of the version they were built on)."""
    images = {f"{i.name}@img" for i in host.storage.datasets("images")
              if i.props.get("base") == info.id}  # fmt: skip
    sources = images | {info.snapshot}
    return sorted(d.name.split("/", 1)[1] for d in host.storage.datasets("jails")
                  if d.origin in sources)  # fmt: skip


def _url_base(ref: object) -> str | None:
    """The normalized location of a BASE URL (as recorded on a fetched base)."""
    if not isinstance(ref, str) or "://" not in ref:
        return None
    from rexcarcer.base.manifest import parse_location

    try:
        return parse_location(ref).url
    except UsageError:
        return None
