"""``rex base update NAME``: the OS's security updates as the base's next version.

The base's snapshot is cloned, the platform updates the clone
(freebsd-update(8) -b, platform/freebsd.py), and the clone becomes the base:
snapshotted at its new ``freebsd-version``, promoted (zfs-promote(8): the
base's older snapshots, and every image and jail cloned from them, move to it)
and renamed into the base's place. Jails and cached images keep the version
they were made from; new builds start from the new one (a new ``id``, so no
cached step is reused across versions). A failure leaves the base as it was.
"""

from __future__ import annotations

import uuid

from rexcarcer.base.local import find_base, freebsd_version
from rexcarcer.errors import UsageError
from rexcarcer.host import Host
from rexcarcer.model.base import BaseInfo

UPDATING = "_upd-"  # a base name never starts with "_" (base/manifest.py NAME)
OLD = "_old-"


def update_base(host: Host, name: str) -> tuple[BaseInfo, bool]:
    """Update base ``name``; the base and whether it changed."""
    with host.lock(f"base-{name}"):
        info = find_base(host, name)
        current = info.props.get("osrelease", "")
        if not current:
            raise UsageError(
                f"base {name!r} has no freebsd-version: it is not a FreeBSD base",
                hint="rex base update applies freebsd-update(8) to a FreeBSD base",
            )
        work = f"bases/{UPDATING}{name}"
        host.storage.destroy(work, recursive=True)  # a killed run's
        host.progress.step(f"Cloning {info.snapshot} to apply the updates of {current}")
        root = host.storage.clone(info.snapshot, work)
        try:
            host.platform.update_base(root, current)
            new = freebsd_version(root)
            if not new or new == current:
                host.storage.destroy(work, recursive=True)
                host.progress.step(f"{name} is up to date ({current})")
                return info, False
            _become_base(host, info, work, new)
        except BaseException:
            host.storage.destroy(work, recursive=True)
            raise
    host.progress.step(f"{name} is now {new}")
    return find_base(host, name), True


def _become_base(host: Host, info: BaseInfo, work: str, new: str) -> None:
    """``work`` (a clone of the base, updated) becomes base ``info.name`` at ``new``."""
    storage = host.storage
    lineage = " ".join(filter(None, [info.props.get("lineage", ""), info.props.get("id", "")]))
    props = {**info.props, "version": new, "osrelease": new, "id": uuid.uuid4().hex,
             "lineage": lineage}  # fmt: skip
    storage.snapshot(f"{work}@{new}")
    storage.set_props(work, props)
    storage.promote(work)  # the base's snapshots (and their clones) move to work
    base, old = f"bases/{info.name}", f"bases/{OLD}{info.name}"
    storage.rename(base, old)
    storage.rename(work, base)
    storage.destroy(old, recursive=True)  # now a clone with no snapshot of its own
