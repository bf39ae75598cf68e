"""Fetch, verify and receive a published base.

``fetch_base`` runs the steps in this order, each only after the one before
passed: manifest, pin, signatures, metadata (verify.py) → the stream, hashed as
it downloads into the cache (fetch.py) → bunzip2, streamed into ``zfs receive
-u`` of a temporary ``bases/_recv-<name>`` → properties → rename to
``bases/<name>``. A failure destroys the temporary dataset; a stream that turns
out unusable also leaves the cache. A killed run leaves at most the temporary
dataset, which the next fetch removes (nobody holds its lock).

The stream is read once from the cache: hashing (again, against a cache
damaged since), decompression and the pipe to zfs(8) happen in one pass, in a
thread, while ``zfs receive`` writes the pool.
"""

from __future__ import annotations

import bz2
import hashlib
import os
import threading
from collections.abc import Callable, Iterator
from itertools import chain
from pathlib import Path
from typing import IO

from rexcarcer.base import VerificationError
from rexcarcer.base.fetch import CHUNK, Source, Wanted, cached_download, open_source, remove_entry
from rexcarcer.base.local import TEMP_PREFIX, find_base, list_bases
from rexcarcer.base.manifest import STREAM, ZFS_HEAD, is_zfs_stream, normalize_pin, parse_location
from rexcarcer.base.progress import Transfer, transfer_for
from rexcarcer.base.sign import now
from rexcarcer.base.trust import TrustStore, trust_dir
from rexcarcer.base.verify import Verified, verify_remote
from rexcarcer.errors import Conflict
from rexcarcer.host import Host
from rexcarcer.model.base import BaseInfo

OUT_CHUNK = 4 * CHUNK  # decompressed bytes per write: bounds memory for any ratio


def cache_dir(host: Host) -> Path:
    return host.config.root / "cache" / "bases"


def local_base_for(host: Host, url: str, pin: str | None = None) -> BaseInfo | None:
    """The base already fetched from ``url`` (matching ``pin``), without any network."""
    loc = parse_location(url)
    want = normalize_pin(pin) if pin else None
    for info in list_bases(host):
        if info.props.get("url") != loc.url or info.props.get("complete") != "1":
            continue
        if want is None or info.props.get("digest") == want:
            return find_base(host, info.name)
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
    name = v.metadata.name
    host.storage.ensure_layout()
    sweep_incomplete(host)
    with host.lock(f"base-{name}"):
        existing = _existing(host, v)
        if existing is not None:
            return existing
        want = Wanted(v.location.stream, v.manifest.stream_sha256, STREAM,
                      v.metadata.compressed_size)  # fmt: skip
        with host.lock(f"fetch-{want.sha256}"):
            path = cached_download(source, want, cache_dir(host), transfer)
        host.progress.step(f"Receiving {name}@{v.metadata.version}")
        try:
            receive_verified(host, v, path, transfer)
        except VerificationError:
            remove_entry(cache_dir(host), want)
            raise
    return find_base(host, name)


def _existing(host: Host, v: Verified) -> BaseInfo | None:
    name = v.metadata.name
    if not host.storage.exists(f"bases/{name}"):
        return None
    props = host.storage.get_props(f"bases/{name}")
    if props.get("digest") == v.digest:
        host.progress.step(f"Base {name} is already here (sha256:{v.digest[:16]}…)")
        return find_base(host, name)
    raise Conflict(
        f"base {name!r} already exists with other content "
        f"({props.get('url') or props.get('origin') or 'imported'}, "
        f"digest {props.get('digest') or 'none'})",
        hint=f"remove it with `rex base rm {name}` (after destroying the jails that use it)",
    )


def sweep_incomplete(host: Host) -> None:
    """Destroy the temporary datasets of receives that were killed."""
    for ds in host.storage.datasets("bases"):
        rest = ds.name.split("/", 1)[1]
        if rest.startswith(TEMP_PREFIX):
            with host.try_lock(f"base-{rest[len(TEMP_PREFIX) :]}") as got:
                if got:
                    host.storage.destroy(ds.name, recursive=True)


def receive_verified(host: Host, v: Verified, path: Path, transfer: Transfer) -> None:
    meta = v.metadata
    temp = f"bases/{TEMP_PREFIX}{meta.name}"
    host.storage.destroy(temp, recursive=True)
    try:
        label = f"receiving {meta.name}@{meta.version}"
        size = receive_file(host, path, temp, v.manifest.stream_sha256, transfer, label)
        _one_snapshot(host, temp, meta.version)
        host.storage.set_props(temp, {
            "version": meta.version, "id": v.digest, "url": v.location.url,
            "origin": v.location.url, "digest": v.digest, "osrelease": meta.osrelease,
            "signer": ",".join(s.fingerprint for s in v.signers), "size": str(size),
            "complete": "1",
        })  # fmt: skip
        host.storage.rename(temp, f"bases/{meta.name}")
    except BaseException:
        host.storage.destroy(temp, recursive=True)
        raise


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
    host: Host, path: Path, temp: str, sha256: str, transfer: Transfer, label: str
) -> int:
    """``zfs receive -u`` the decompressed ``path`` into ``temp``; returns the
    stream's size. The file's hash must still be ``sha256``."""
    with path.open("rb") as src:
        feeder = Feeder(src, transfer)
        transfer.start(label, path.stat().st_size)
        try:
            if not is_zfs_stream(feeder.head()):
                raise VerificationError(
                    f"{path.name} is not a ZFS send stream (no DRR_BEGIN record after bunzip2)",
                    hint="a base's .zfs.bz2 is `zfs send DATASET@SNAP | bzip2`",
                )
            feeder.run_into(lambda stream: host.storage.receive(temp, stream))
        finally:
            transfer.finish()
    if feeder.hexdigest() != sha256:
        raise VerificationError(
            f"the cached stream {path} changed since it was verified",
            hint="the cache entry was removed; run the command again",
        )
    return feeder.written


class Feeder:
    """Reads the file once: hashes it, decompresses it, writes it into a pipe.

    ``size``: read exactly that many bytes from where ``src`` stands (one part of
    a larger file, as a jail export's streams are; ending early is an error);
    ``decompress=False``: the bytes go into the pipe as they are."""

    def __init__(
        self, src: IO[bytes], transfer: Transfer, *, size: int | None = None,
        decompress: bool = True,
    ) -> None:  # fmt: skip
        self.src = src
        self.transfer = transfer
        self.size = size
        self.hasher = hashlib.sha256()
        self.chunks = bunzip(self._read()) if decompress else self._read()
        self.pending: list[bytes] = []
        self.written = 0
        self.error: BaseException | None = None

    def _read(self) -> Iterator[bytes]:
        left = self.size
        while left is None or left > 0:
            chunk = self.src.read(CHUNK if left is None else min(CHUNK, left))
            if not chunk:
                if left:
                    raise VerificationError(f"the stream ended {left} bytes early",
                                            hint="the file was truncated")  # fmt: skip
                return
            if left is not None:
                left -= len(chunk)
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
