"""Fetch, verify and receive a published base, or a new version of one.

``fetch_base`` runs the steps in this order, each only after the one before
passed: manifest, pin, signatures, metadata (verify.py) → the choice of what to
receive → that stream, hashed as it downloads into the cache (fetch.py) →
bunzip2 and a check of the ZFS stream header, streamed into ``zfs receive -u``
→ properties.

What is received (versions.py has the layout):

- a base not on this host: the full stream, into a temporary
  ``bases/_recv-<name>``, renamed to ``bases/<name>``;
- a new version of a base fetched from the same URL: the increment
  ``NAME.from-V.zfs.bz2`` when this host has exactly the snapshot it applies to
  (``@V`` with the guid the metadata gives, the most recent snapshot of its
  dataset), received into that dataset; else the full stream, into the
  temporary dataset, renamed to ``bases/<name>:<version>`` beside the versions
  jails use. An increment that ``zfs receive`` refuses (nothing changes then)
  falls back to the full stream; a tampered one is refused;
- a version already here: nothing (it becomes current again if the URL
  publishes it again).

A failure destroys the temporary dataset (an incremental receive changes
nothing unless it completes); a stream that turns out unusable also leaves the
cache. A killed run leaves at most the temporary dataset, which the next fetch
removes (nobody holds its lock), or a received snapshot without its
properties, which the next fetch records when its guid is the published one.

The stream is read once from the cache: hashing (again, against a cache
damaged since), decompression and the pipe to zfs(8) happen in one pass, in a
thread, while ``zfs receive`` writes the pool.
"""

from __future__ import annotations

import bz2
import hashlib
import logging
import os
import threading
from collections.abc import Callable, Iterator
from itertools import chain
from pathlib import Path
from typing import IO

from rexcarcer.base import VerificationError, versions
from rexcarcer.base.fetch import CHUNK, Source, Wanted, cached_download, open_source, remove_entry
from rexcarcer.base.local import find_base, list_bases, received
from rexcarcer.base.manifest import (
    STREAM,
    ZFS_HEAD,
    Increment,
    StreamHead,
    normalize_pin,
    parse_location,
    parse_stream_head,
)
from rexcarcer.base.progress import Transfer, transfer_for
from rexcarcer.base.sign import now
from rexcarcer.base.trust import TrustStore, trust_dir
from rexcarcer.base.verify import Verified, verify_remote
from rexcarcer.base.versions import TEMP_PREFIX
from rexcarcer.errors import Conflict, StorageError
from rexcarcer.host import Host
from rexcarcer.model.base import BaseInfo

log = logging.getLogger("rexcarcer.fetch")
OUT_CHUNK = 4 * CHUNK  # decompressed bytes per write: bounds memory for any ratio


def cache_dir(host: Host) -> Path:
    return host.config.root / "cache" / "bases"


def local_base_for(host: Host, url: str, pin: str | None = None) -> BaseInfo | None:
    """The base already fetched from ``url``, without any network: its current
    version, or with a pin the version whose manifest has that digest."""
    loc = parse_location(url)
    want = normalize_pin(pin) if pin else None
    for info in list_bases(host):
        if info.props.get("url") != loc.url:
            continue
        for v in reversed(info.versions):
            if v.props.get("complete") != "1":
                continue
            if (want is None and v.version == info.current) or v.props.get("digest") == want:
                return versions.at_version(info, v.version)
    return None


def ensure_base(host: Host, url: str, pin: str | None = None) -> BaseInfo:
    """``BASE <url> [sha256:<hex>]``: the local copy if there is one, else fetch it."""
    return local_base_for(host, url, pin) or fetch_base(host, url, pin=pin)


def fetch_base(
    host: Host, url: str, *, pin: str | None = None, transfer: Transfer | None = None
) -> BaseInfo:
    loc = parse_location(url)
    want_pin = normalize_pin(pin) if pin else None
    trust = TrustStore(trust_dir(host.config.root))
    host.progress.step(f"Verifying {loc.url}")
    source = open_source(loc.url, host.config.ca_bundle)
    try:
        verified = verify_remote(source, loc, trust, pin=want_pin, when=now())
        return _install(host, source, verified, transfer or transfer_for(host.progress))
    finally:
        source.close()


def _install(host: Host, source: Source, v: Verified, transfer: Transfer) -> BaseInfo:
    name, version = v.metadata.name, v.metadata.version
    host.storage.ensure_layout()
    sweep_incomplete(host)
    with host.lock(f"base-{name}"):
        info = versions.lookup(host, name)
        if info is None:
            if host.storage.exists(f"bases/{name}"):
                raise _other_content(host, name)
            _receive_full(host, source, v, transfer, f"bases/{name}")
            return find_base(host, name)
        if not received(info) or info.props.get("url") != v.location.url:
            raise _other_content(host, name)
        here = _already_here(host, info, v) or _recover(host, info, v)
        if here is not None:
            return here
        versions.keep_own_props(host, info)
        chosen = choose_increment(host, info, v)
        if chosen is not None:
            try:
                _receive_increment(host, source, v, transfer, *chosen)
                return find_base(host, name)
            except StorageError as exc:  # zfs receive refused it: nothing changed
                host.progress.step(f"The increment from {chosen[0].version} did not apply "
                                   f"({exc.message}); receiving the full stream")  # fmt: skip
        _receive_full(host, source, v, transfer, versions.lineage_dataset(name, version))
    return find_base(host, name)


def _other_content(host: Host, name: str) -> Conflict:
    props = host.storage.get_props(f"bases/{name}")
    return Conflict(
        f"base {name!r} already exists with other content "
        f"({props.get('url') or props.get('origin') or 'imported'}, "
        f"digest {props.get('digest') or 'none'})",
        hint=f"remove it with `rex base rm {name}` (after destroying the jails that use it)",
    )


def _already_here(host: Host, info: BaseInfo, v: Verified) -> BaseInfo | None:
    """The version the manifest describes, when this host has it."""
    have = info.at(v.metadata.version)
    if have is None:
        return None
    name = info.name
    if have.props.get("digest") != v.digest:
        raise Conflict(
            f"version {v.metadata.version} of base {name!r} is here with other content "
            f"(digest {have.props.get('digest') or 'none'}; {v.location.url} now has "
            f"sha256:{v.digest})",
            hint="the publisher republished a version under the same name; ask them, or "
            f"`rex base rm {name}` and fetch it again",
        )
    if have.version == info.current:
        host.progress.step(f"Base {name} is already here (sha256:{v.digest[:16]}…)")
    else:
        versions.make_current(host, name, have.version, have.props)
        host.progress.step(f"Base {name}: version {have.version} is here; it is current again")
    return find_base(host, name)


def _recover(host: Host, info: BaseInfo, v: Verified) -> BaseInfo | None:
    """A snapshot of this version that a killed run received but did not record:
    recorded when it is the published snapshot (its guid), else removed."""
    meta = v.metadata
    found = None
    for snap in versions.leftovers(host, info.name, meta.version):
        if found is None and meta.guid is not None and snap.guid == meta.guid:
            found = snap.name
            continue
        host.progress.step(f"Removing {snap.name}, left by an interrupted run")
        host.storage.destroy(snap.name)
        ds = snap.name.partition("@")[0]
        if ds != f"bases/{info.name}" and not host.storage.snapshots(ds):
            host.storage.destroy(ds, recursive=True)
    if found is None:
        return None
    versions.record(host, info.name, found, _version_props(v, None), {"url": v.location.url})
    return find_base(host, info.name)


def choose_increment(host: Host, info: BaseInfo, v: Verified) -> tuple[Increment, str] | None:
    """The increment this host can apply and the dataset it goes into: one whose
    source is a snapshot here with the guid the metadata gives (the same snapshot,
    not just the same name) that is the most recent snapshot of its dataset (zfs
    receive applies an increment to that one only). The current version's dataset
    first."""
    found: list[tuple[Increment, str]] = []
    for inc in v.metadata.incremental_from:
        have = info.at(inc.version)
        if have is None:
            continue
        if have.guid != inc.guid:
            host.progress.step(f"{info.name}@{inc.version} here is not the published snapshot "
                               f"(guid {have.guid}, the increment needs {inc.guid})")  # fmt: skip
            continue
        ds = have.snapshot.partition("@")[0]
        tip = versions.tip(host, ds)
        if tip is not None and tip.guid == inc.guid:
            found.append((inc, ds))
    current = info.snapshot.partition("@")[0]
    found.sort(key=lambda pair: pair[1] != current)
    return found[0] if found else None


def _version_props(v: Verified, size: int | None) -> dict[str, str]:
    props = {"id": v.digest, "origin": v.location.url, "digest": v.digest,
             "osrelease": v.metadata.osrelease,
             "signer": ",".join(s.fingerprint for s in v.signers)}  # fmt: skip
    if size is not None:
        props["size"] = str(size)
    elif v.metadata.stream_size is not None:
        props["size"] = str(v.metadata.stream_size)
    return props


def sweep_incomplete(host: Host) -> None:
    """Destroy the temporary datasets of receives that were killed."""
    for ds in host.storage.datasets("bases"):
        rest = ds.name.split("/", 1)[1]
        if rest.startswith(TEMP_PREFIX):
            with host.try_lock(f"base-{rest[len(TEMP_PREFIX) :]}") as got:
                if got:
                    host.storage.destroy(ds.name, recursive=True)


def _receive_full(host: Host, source: Source, v: Verified, transfer: Transfer, into: str) -> None:
    meta = v.metadata
    want = Wanted(v.location.stream, v.manifest.stream_sha256, STREAM, meta.compressed_size)
    with host.lock(f"fetch-{want.sha256}"):
        path = cached_download(source, want, cache_dir(host), transfer)
    host.progress.step(f"Receiving {meta.name}@{meta.version}")
    try:
        receive_verified(host, v, path, transfer, into)
    except VerificationError:
        remove_entry(cache_dir(host), want)
        raise


def receive_verified(
    host: Host, v: Verified, path: Path, transfer: Transfer, into: str | None = None
) -> None:
    """The full stream at ``path`` into ``into`` (default ``bases/<name>``, a new
    base) through the temporary dataset; any other ``into`` is a version beside
    the base's others, made current."""
    meta = v.metadata
    primary = f"bases/{meta.name}"
    into = into or primary
    temp = f"bases/{TEMP_PREFIX}{meta.name}"
    host.storage.destroy(temp, recursive=True)
    try:
        label = f"receiving {meta.name}@{meta.version}"
        expect = StreamHead(meta.guid or 0, 0)
        size = receive_file(host, path, temp, v.manifest.stream_sha256, transfer, label, expect)
        _one_snapshot(host, temp, meta.version)
        props = {**_version_props(v, size), "complete": "1"}
        host.storage.set_props(f"{temp}@{meta.version}", props)
        if into == primary:
            host.storage.set_props(temp, {"version": meta.version, "url": v.location.url, **props})
        host.storage.rename(temp, into)
    except BaseException:
        host.storage.destroy(temp, recursive=True)
        raise
    if into != primary:
        versions.make_current(host, meta.name, meta.version, props, {"url": v.location.url})


def _receive_increment(
    host: Host, source: Source, v: Verified, transfer: Transfer, inc: Increment, target: str
) -> None:
    meta = v.metadata
    sha = v.manifest.increments[inc.version]
    want = Wanted(v.location.increment(inc.version), sha, STREAM)
    host.progress.step(f"Receiving {meta.name}@{meta.version} as the increment from "
                       f"{inc.version} (this host has {target}@{inc.version})")  # fmt: skip
    with host.lock(f"fetch-{want.sha256}"):
        path = cached_download(source, want, cache_dir(host), transfer)
    before = set(host.storage.snapshots(target))
    label = f"receiving {meta.name}@{meta.version} (increment)"
    try:
        assert meta.guid is not None  # metadata with increments has a guid (manifest.py)
        size = receive_file(host, path, target, sha, transfer, label,
                            StreamHead(meta.guid, inc.guid))  # fmt: skip
    except VerificationError:
        remove_entry(cache_dir(host), want)
        raise
    new = sorted(set(host.storage.snapshots(target)) - before)
    if len(new) != 1:
        raise VerificationError(f"the increment made {len(new)} snapshots in {target}, not one")
    snapshot = f"{target}@{meta.version}"
    if new[0] != snapshot:
        host.storage.rename(new[0], snapshot)
    # the size of the version (its full stream, as the metadata says), not of the change
    props = _version_props(v, None if meta.stream_size is not None else size)
    versions.record(host, meta.name, snapshot, props, {"url": v.location.url})


def _one_snapshot(host: Host, temp: str, version: str) -> None:
    snaps = host.storage.snapshots(temp)
    if len(snaps) != 1:
        raise VerificationError(
            f"the stream holds {len(snaps)} snapshots; a base is a single snapshot",
            hint="publish with `zfs send DATASET@SNAP` (no -R, no -I)",
        )
    if snaps[0] != f"{temp}@{version}":
        host.storage.rename(snaps[0], f"{temp}@{version}")


# -- bunzip2 | zfs receive --------------------------------------------------------------


def receive_file(
    host: Host, path: Path, target: str, sha256: str, transfer: Transfer, label: str,
    expect: StreamHead,
) -> int:  # fmt: skip
    """``zfs receive -u`` the decompressed ``path`` into ``target``; returns the
    stream's size. The file's hash must still be ``sha256``, and its header must
    be ``expect``'s: the snapshot it applies to (0: a full stream) and the one it
    makes (0: not checked)."""
    with path.open("rb") as src:
        feeder = Feeder(src, transfer)
        transfer.start(label, path.stat().st_size)
        try:
            check_head(feeder.head(), expect, path.name)
            feeder.run_into(lambda stream: host.storage.receive(target, stream))
        finally:
            transfer.finish()
    if feeder.hexdigest() != sha256:
        raise VerificationError(
            f"the cached stream {path} changed since it was verified",
            hint="the cache entry was removed; run the command again",
        )
    return feeder.written


def check_head(head: bytes, expect: StreamHead, what: str) -> None:
    """The DRR_BEGIN record names the snapshots the signed metadata names."""
    got = parse_stream_head(head)
    if got is None:
        raise VerificationError(
            f"{what} is not a ZFS send stream (no DRR_BEGIN record after bunzip2)",
            hint="a base's .zfs.bz2 is `zfs send DATASET@SNAP | bzip2`",
        )
    if got.fromguid != expect.fromguid:
        kind = f"an increment from the snapshot with guid {got.fromguid}" if got.fromguid else (
            "a full stream")  # fmt: skip
        wanted = (f"the increment from the snapshot with guid {expect.fromguid}"
                  if expect.fromguid else "a full stream")  # fmt: skip
        raise VerificationError(
            f"{what} is {kind}, but the signed metadata says it is {wanted}",
            hint="the publisher's files do not match each other; nothing was received",
        )
    if expect.toguid and got.toguid != expect.toguid:
        raise VerificationError(
            f"{what} makes the snapshot with guid {got.toguid}, but the signed metadata "
            f"says {expect.toguid}",
            hint="the publisher's files do not match each other; nothing was received",
        )


class Feeder:
    """Reads the file once: hashes it, decompresses it, writes it into a pipe."""

    def __init__(self, src: IO[bytes], transfer: Transfer) -> None:
        self.src = src
        self.transfer = transfer
        self.hasher = hashlib.sha256()
        self.chunks = bunzip(self._read())
        self.pending: list[bytes] = []
        self.written = 0
        self.error: BaseException | None = None

    def _read(self) -> Iterator[bytes]:
        for chunk in iter(lambda: self.src.read(CHUNK), b""):
            self.hasher.update(chunk)
            self.transfer.advance(len(chunk))
            yield chunk

    def hexdigest(self) -> str:
        return self.hasher.hexdigest()

    def head(self) -> bytes:
        """The first decompressed bytes, held back until ``run_into``."""
        while sum(map(len, self.pending)) < ZFS_HEAD:
            chunk = next(self.chunks, None)
            if chunk is None:
                break
            self.pending.append(chunk)
        return b"".join(self.pending)[:ZFS_HEAD]

    def run_into(self, consume: Callable[[IO[bytes]], None]) -> None:
        """Run ``consume`` on the read end of a pipe this feeder fills from a thread."""
        r, w = os.pipe()
        thread = threading.Thread(target=self._pump, args=(w,), name="rex-bunzip2")
        with os.fdopen(r, "rb", buffering=0) as reader:
            thread.start()
            try:
                consume(reader)
            except BaseException as exc:
                reader.close()  # the pump sees EPIPE and stops
                thread.join()
                if self.error is not None and not isinstance(self.error, BrokenPipeError):
                    raise self.error from exc
                raise
        thread.join()
        if self.error is not None:
            if isinstance(self.error, BrokenPipeError):
                raise VerificationError(
                    "zfs receive stopped before the end of the stream (data after its end?)"
                ) from self.error
            raise self.error

    def _pump(self, w: int) -> None:
        try:
            with os.fdopen(w, "wb") as out:
                for chunk in chain(self.pending, self.chunks):
                    out.write(chunk)
                    self.written += len(chunk)
        except BaseException as exc:  # handed to the caller's thread by run_into
            self.error = exc


def bunzip(chunks: Iterator[bytes]) -> Iterator[bytes]:
    """Decompress bzip2, including concatenated streams (pbzip2, lbzip2, rex)."""
    dec = bz2.BZ2Decompressor()
    fed = False
    try:
        for data in chunks:
            fed = True
            while True:
                out = dec.decompress(data, max_length=OUT_CHUNK)
                data = b""
                if out:
                    yield out
                if dec.eof:
                    data, dec, fed = dec.unused_data, bz2.BZ2Decompressor(), False
                    if not data:
                        break
                    fed = True
                elif dec.needs_input:
                    break
    except OSError as exc:
        raise VerificationError(
            f"the stream is not bzip2-compressed data ({exc})",
            hint="a base's .zfs.bz2 is `zfs send DATASET@SNAP | bzip2`",
        ) from exc
    if fed:
        raise VerificationError("the bzip2 stream is truncated")
