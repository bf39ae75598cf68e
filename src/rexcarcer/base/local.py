"""Local bases: ``bases/<name>@<version>``, made from a directory or tarball,
found, listed and removed (a published base becomes a local one once received)."""

from __future__ import annotations

import os
import re
import time
import uuid
from collections.abc import Mapping
from pathlib import Path

from rexcarcer.base.manifest import NAME
from rexcarcer.errors import CommandFailed, Conflict, NotFound, StorageError, UsageError
from rexcarcer.host import Host
from rexcarcer.model.base import BaseInfo
from rexcarcer.state.records import list_jails

BASE_NAME = NAME  # one rule for local names and published ones
# A base being received is bases/_recv-<name>: no base name starts with "_".
TEMP_PREFIX = "_recv-"
_VERSION_LINE = re.compile(r'^USERLAND_VERSION="([^"]+)"', re.M)


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


def find_base(host: Host, name: str) -> BaseInfo:
    check_base_name(name)
    ds = f"bases/{name}"
    if not host.storage.exists(ds):
        raise NotFound(
            f"base {name!r} does not exist on this host",
            hint=f"import one with `rex base import DIR {name}` or name a URL in BASE",
        )
    props = host.storage.get_props(ds)
    version = props.get("version")
    snapshot = f"{ds}@{version}"
    if not version or not host.storage.exists(snapshot):
        raise NotFound(
            f"base {name!r} is incomplete (no snapshot)",
            hint=f"remove it with `rex base rm {name}` and import it again",
        )
    return BaseInfo(name, version, snapshot, props)


def list_bases(host: Host) -> list[BaseInfo]:
    out = []
    for ds in host.storage.datasets("bases"):
        if ds.name.startswith("bases/_"):  # being received or updated: no base name has "_"
            continue
        version = ds.props.get("version", "")
        out.append(
            BaseInfo(ds.name.split("/", 1)[1], version, f"{ds.name}@{version}", dict(ds.props))
        )
    return out


def import_base(host: Host, source: Path, name: str, *, version: str | None = None) -> BaseInfo:
    """Make ``bases/<name>@<version>`` from a directory or a tarball."""
    check_base_name(name)
    if not source.exists():
        raise NotFound(f"{source} does not exist", hint="give a directory or a tar archive")
    return create_base(host, source, name, version=version, origin=str(source.resolve()))


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
            host.storage.set_props(ds, {
                "version": version, "id": uuid.uuid4().hex, "origin": origin,
                "osrelease": osrelease or "", "size": str(tree_size(mnt)), **(props or {}),
            })  # fmt: skip
            host.storage.snapshot(f"{ds}@{version}")
        except BaseException:
            host.storage.destroy(ds, recursive=True)
            raise
    return find_base(host, name)


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
    info = find_base(host, name)
    if users:
        raise Conflict(
            f"base {name!r} is used by jails: {', '.join(sorted(users))}",
            hint="destroy those jails first",
        )
    # cached images cloned from this base go with it (from any of its versions:
    # `rex base update` gives each a new id and keeps the older ones in lineage)
    ids = {info.props.get("id"), *info.props.get("lineage", "").split()} - {None, ""}
    images = [i for i in host.storage.datasets("images") if i.props.get("base") in ids]
    # deepest first: a step's image is a clone of the one before it
    for image in sorted(images, key=lambda i: -int(i.props.get("depth", "0"))):
        host.storage.destroy(image.name, recursive=True)
    host.storage.destroy(f"bases/{name}", recursive=True)


def jails_using(host: Host, info: BaseInfo) -> list[str]:
    """Jails whose BASE names this base: by name, or by the URL it was fetched from."""
    refs = {info.name} | ({info.props["url"]} if info.props.get("url") else set())
    out = []
    for rec in list_jails(host.store):
        if rec.base in refs or _url_base(rec.base) in refs:
            out.append(rec.name)
    return sorted(out)


def _url_base(ref: object) -> str | None:
    """The normalized location of a BASE URL (as recorded on a fetched base)."""
    if not isinstance(ref, str) or "://" not in ref:
        return None
    from rexcarcer.base.manifest import parse_location

    try:
        return parse_location(ref).url
    except UsageError:
        return None
