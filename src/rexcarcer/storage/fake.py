"""An in-memory ZFS for unit tests: datasets are real directories under a
scratch directory, snapshots are copies, clones copy their snapshot. Slow for
big trees, exact in behaviour where the engine can tell.

Its send streams are its own (``FAKE_STREAM``, a JSON line, then a tar of the
snapshot's tree): they travel and are received as zfs(8) streams are, full or
incremental, and are refused by the real driver (and it refuses zfs(8)'s).
"""

from __future__ import annotations

import io
import itertools
import json
import random
import shutil
import tarfile
from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from rexcarcer.errors import NotFound, StorageError
from rexcarcer.storage import zfs
from rexcarcer.storage.base import LAYOUT, Dataset, Snapshot

FAKE_STREAM = b"rexcarcer-fake-zfs-stream 1\n"
MAX_HEAD = 4096


@dataclass
class _Entry:
    props: dict[str, str] = field(default_factory=dict)
    origin: str | None = None


@dataclass
class _Snap:
    guid: int
    txg: int
    props: dict[str, str] = field(default_factory=dict)


class FakeStorage:
    def __init__(self, scratch: Path, parent: str = "pool/rex") -> None:
        self.parent = parent
        self.scratch = scratch
        self._ds: dict[str, _Entry] = {}
        self.snaps: dict[str, Path] = {}
        # a snapshot's identity as zfs keeps it: guid (random, as in ZFS) and the
        # order it was made in (createtxg)
        self.snap_meta: dict[str, _Snap] = {}
        self._txg = itertools.count(1)
        self.birth: dict[str, int] = {}  # snapshot -> creation order (zfs's createtxg)
        # the zfs(8) command lines the real driver would have run for the changes
        # made so far (clone, snapshot, set): what `rex plan` is checked against
        self.calls: list[list[str]] = []
        self.quotas: dict[str, int | None] = {}
        self.unmounted: set[str] = set()  # received (zfs receive -u), not mounted yet

    def _dir(self, name: str) -> Path:
        return self.scratch / "mnt" / name

    def ensure_layout(self) -> None:
        for kind in LAYOUT:
            if kind not in self._ds:
                self._ds[kind] = _Entry()
                self._dir(kind).mkdir(parents=True, exist_ok=True)

    def exists(self, name: str) -> bool:
        return name in self._ds or name in self.snaps

    def mountpoint(self, name: str) -> Path:
        if name not in self._ds:
            raise NotFound(f"dataset {name} does not exist")
        return self._dir(name)

    def mounted(self, name: str) -> bool:
        # every filesystem of the fake is a directory, as if mounted, but a receive's
        return name in self._ds and name not in self.unmounted

    def create(self, name: str, *, props: Mapping[str, str] | None = None) -> Path:
        self._new(name, props, None)
        self._dir(name).mkdir(parents=True)
        return self._dir(name)

    def _new(self, name: str, props: Mapping[str, str] | None, origin: str | None) -> None:
        if self.exists(name):
            raise StorageError(f"cannot create '{self.parent}/{name}': dataset already exists")
        if name.rpartition("/")[0] not in self._ds:
            raise StorageError(f"cannot create '{self.parent}/{name}': parent does not exist")
        self._ds[name] = _Entry(dict(props or {}), origin)

    # the same zfs(8) command lines the real driver runs, for `rex plan`
    def clone_argv(
        self, snapshot: str, name: str, props: Mapping[str, str] | None = None
    ) -> list[str]:
        return zfs.clone_argv(f"{self.parent}/{snapshot}", f"{self.parent}/{name}", props)

    def snapshot_argv(self, snapshot: str) -> list[str]:
        return zfs.snapshot_argv(f"{self.parent}/{snapshot}")

    def set_props_argvs(self, name: str, props: Mapping[str, str]) -> list[list[str]]:
        return zfs.set_argvs(f"{self.parent}/{name}", props)

    def clone(self, snapshot: str, name: str, *, props: Mapping[str, str] | None = None) -> Path:
        if snapshot not in self.snaps:
            raise StorageError(f"cannot open '{self.parent}/{snapshot}': dataset does not exist")
        self._new(name, props, snapshot)
        self.calls.append(self.clone_argv(snapshot, name, props))
        shutil.copytree(self.snaps[snapshot], self._dir(name), symlinks=True)
        return self._dir(name)

    def clone_only(
        self, snapshot: str, name: str, *, props: Mapping[str, str] | None = None
    ) -> None:
        self.clone(snapshot, name, props=props)  # one way in: subclasses override clone

    def snapshot(self, snapshot: str) -> None:
        ds = snapshot.partition("@")[0]
        if ds not in self._ds or snapshot in self.snaps:
            raise StorageError(f"cannot create snapshot '{self.parent}/{snapshot}'")
        self.calls.append(self.snapshot_argv(snapshot))
        txg = next(self._txg)
        # named by txg too: a renamed snapshot keeps its copy, and the old name may return
        copy = self.scratch / "snaps" / f"{txg}-{snapshot.replace('/', '_')}"
        shutil.copytree(self._dir(ds), copy, symlinks=True)
        self.snaps[snapshot] = copy
        self.snap_meta[snapshot] = _Snap(random.getrandbits(64) or 1, txg)
        self.birth[snapshot] = txg

    def snapshot_details(self, name: str) -> list[Snapshot]:
        def below(snap: str) -> bool:
            ds = snap.partition("@")[0]
            return ds == name or (ds.startswith(name + "/") and "/" not in ds[len(name) + 1 :])

        out = [Snapshot(s, m.guid, m.txg, dict(m.props))
               for s, m in self.snap_meta.items() if below(s)]  # fmt: skip
        return sorted(out, key=lambda s: (s.createtxg, s.name))

    def snapshots(self, name: str) -> list[str]:
        return sorted(s for s in self.snaps if s.partition("@")[0] == name)

    def destroy(self, name: str, *, recursive: bool = False, missing_ok: bool = True) -> None:
        if not self.exists(name):
            if missing_ok:
                return
            raise NotFound(f"dataset {name} does not exist")
        if name in self.snaps:
            if any(e.origin == name for e in self._ds.values()):
                raise StorageError(f"cannot destroy '{name}': snapshot has dependent clones")
            shutil.rmtree(self.snaps.pop(name))
            del self.snap_meta[name]
            self.birth.pop(name, None)
            return
        own = self.snapshots(name)
        if own and not recursive:
            raise StorageError(f"cannot destroy '{name}': filesystem has children")
        for snap in own:
            self.destroy(snap)
        del self._ds[name]
        self.unmounted.discard(name)
        shutil.rmtree(self._dir(name))

    def _props(self, name: str) -> dict[str, str]:
        if name in self.snap_meta:
            return self.snap_meta[name].props
        if name not in self._ds:
            raise NotFound(f"dataset {name} does not exist")
        return self._ds[name].props

    def get_props(self, name: str) -> dict[str, str]:
        return dict(self._props(name))

    def set_props(self, name: str, props: Mapping[str, str]) -> None:
        own = self._props(name)
        self.calls += self.set_props_argvs(name, props)
        for key, value in props.items():
            if value:
                own[key] = value
            else:  # as zfs inherit: the user property is gone
                own.pop(key, None)

    def set_quota(self, name: str, size: int | None) -> None:
        if name not in self._ds:
            raise NotFound(f"dataset {name} does not exist")
        self.quotas[name] = size

    def used(self, name: str) -> int:
        if name not in self._ds:
            raise NotFound(f"dataset {name} does not exist")
        return sum(p.stat().st_size for p in self._dir(name).rglob("*") if p.is_file())

    def available(self, name: str) -> int:
        quota = self.quotas.get(name)
        return 1 << 40 if quota is None else max(0, quota - self.used(name))

    def datasets(self, kind: str) -> list[Dataset]:
        prefix = kind + "/"
        return [
            Dataset(n, self._dir(n), e.origin, dict(e.props))
            for n, e in sorted(self._ds.items())
            if n.startswith(prefix) and "/" not in n[len(prefix) :]
        ]

    def listing(self, kinds: Sequence[str]) -> AbstractContextManager[None]:
        return nullcontext()  # every read here is in memory already

    def tree(self, kind: str) -> tuple[list[Dataset], list[Snapshot]]:
        return self.datasets(kind), self.snapshot_details(kind)

    def props_of(self, names: Sequence[str], props: Sequence[str]) -> dict[str, Dataset]:
        out: dict[str, Dataset] = {}
        for name in names:
            if name in self._ds:
                own, mnt = self._ds[name].props, self._dir(name)
            elif name in self.snaps:
                meta = self.snap_meta.get(name)
                own, mnt = (meta.props if meta else {}), None
            else:
                continue
            out[name] = Dataset(name, mnt, None, {k: v for k, v in own.items() if k in props})
        return out

    def props_below(self, kinds: Sequence[str], props: Sequence[str]) -> list[Dataset]:
        return [
            Dataset(d.name, d.mountpoint, None, {k: v for k, v in d.props.items() if k in props})
            for kind in kinds
            for d in self.datasets(kind)
        ]

    def send(self, snapshot: str, out: IO[bytes], *, since: str | None = None) -> None:
        if snapshot not in self.snaps:
            raise StorageError(f"cannot open '{self.parent}/{snapshot}': dataset does not exist")
        if since is not None and (
            since not in self.snaps or since.partition("@")[0] != snapshot.partition("@")[0]
        ):
            raise StorageError(f"incremental source {since} is not a snapshot of {snapshot}")
        head = {"snapshot": snapshot.partition("@")[2], "guid": self.snap_meta[snapshot].guid,
                "since": since.partition("@")[2] if since else None}  # fmt: skip
        out.write(FAKE_STREAM + json.dumps(head).encode() + b"\n")
        with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tar:
            tar.add(self.snaps[snapshot], arcname=".")

    def receive(self, name: str, stream: IO[bytes]) -> None:
        if stream.read(len(FAKE_STREAM)) != FAKE_STREAM:
            raise StorageError(f"cannot receive into {name}: invalid stream (bad magic number)")
        try:
            head = json.loads(stream.readline(MAX_HEAD))
            label, since, guid = str(head["snapshot"]), head.get("since"), int(head["guid"])
        except (ValueError, KeyError, TypeError) as exc:
            raise StorageError(f"cannot receive into {name}: invalid stream header") from exc
        if since is None:
            self._new(name, None, None)
        elif f"{name}@{since}" not in self.snaps:
            raise StorageError(f"cannot receive incremental stream: {name}@{since} does not exist")
        elif max(self.snapshots(name), key=lambda s: self.snap_meta[s].txg) != f"{name}@{since}":
            # zfs(8): an incremental stream applies only onto the newest snapshot
            raise StorageError(f"cannot receive incremental stream: most recent snapshot of "
                               f"{name} does not match incremental source")  # fmt: skip
        tree = self._dir(name)
        shutil.rmtree(tree, ignore_errors=True)
        tree.mkdir(parents=True)
        data = io.BytesIO(stream.read())
        try:
            with tarfile.open(fileobj=data, mode="r:") as tar:
                tar.extractall(tree, filter="tar")
        except (tarfile.TarError, OSError) as exc:
            if since is None:
                del self._ds[name]
            raise StorageError(f"cannot receive into {name}: {exc}") from exc
        self.snapshot(f"{name}@{label}")
        self.snap_meta[f"{name}@{label}"].guid = guid  # a received snapshot keeps its identity
        self.unmounted.add(name)

    def mount(self, name: str) -> None:
        if name not in self._ds:
            raise NotFound(f"dataset {name} does not exist")
        self.unmounted.discard(name)

    def rename(self, name: str, new: str) -> None:
        if not self.exists(name):
            raise NotFound(f"dataset {name} does not exist")
        if self.exists(new):
            raise StorageError(f"cannot rename to '{self.parent}/{new}': dataset already exists")
        if name in self.snaps:
            if name.partition("@")[0] != new.partition("@")[0]:
                raise StorageError("snapshots can only be renamed within their dataset")
            self.snaps[new] = self.snaps.pop(name)
            if name in self.snap_meta:
                self.snap_meta[new] = self.snap_meta.pop(name)
            self.birth[new] = self.birth.pop(name, 0)
            return
        self._new(new, self._ds[name].props, self._ds[name].origin)
        del self._ds[name]
        if name in self.unmounted:
            self.unmounted.discard(name)
            self.unmounted.add(new)
        self._dir(new).parent.mkdir(parents=True, exist_ok=True)
        self._dir(name).rename(self._dir(new))
        for snap in self.snapshots(name):
            self.snaps[new + snap[len(name) :]] = self.snaps.pop(snap)
            if snap in self.snap_meta:
                self.snap_meta[new + snap[len(name) :]] = self.snap_meta.pop(snap)
            self.birth[new + snap[len(name) :]] = self.birth.pop(snap, 0)
        for entry in self._ds.values():  # clones follow their origin's new name
            if entry.origin and entry.origin.partition("@")[0] == name:
                entry.origin = new + entry.origin[len(name) :]

    def promote(self, name: str) -> None:
        """zfs-promote(8): the origin's snapshots up to the clone's origin move to
        the clone, with every clone of them; the old origin becomes a clone."""
        entry = self._ds.get(name)
        if entry is None or entry.origin is None:
            raise StorageError(f"cannot promote '{self.parent}/{name}': not a cloned filesystem")
        origin_ds = entry.origin.partition("@")[0]
        limit = self.birth.get(entry.origin, 0)
        moved = [s for s in self.snapshots(origin_ds) if self.birth.get(s, 0) <= limit]
        renames = {snap: f"{name}@{snap.partition('@')[2]}" for snap in moved}
        for old, new in renames.items():
            self.snaps[new] = self.snaps.pop(old)
            self.birth[new] = self.birth.pop(old, 0)
        for other in self._ds.values():
            if other.origin in renames:
                other.origin = renames[other.origin]
        self._ds[origin_ds].origin = renames.get(entry.origin)
        entry.origin = None
