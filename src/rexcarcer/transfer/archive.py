"""The export file: a header, then the ``zfs send`` streams.

::

    offset 0          MAGIC (16 bytes) "REXCARCER-JAIL\\n\\0"
    16                header length H (8 bytes, big-endian)
    24                header: three blobs, each a 4-byte big-endian length and its
                      bytes: the manifest (JSON, manifest.py), its signature by the
                      exporting host's key (openssl dgst -sha256 -sign), the
                      host's certificate chain (PEM, its certificate first)
    24 + H            zeros, up to HEADER_SPACE (1 MiB)
    HEADER_SPACE      the parts, back to back, in the manifest's order; the file
                      ends with the last one

Writing: the streams go straight into the file after the reserved header
space, each hashed as it passes; the header, which lists their sizes and
digests, is written last, at the start: an export never holds a stream in
memory or twice on disk. Reading: the header, the signature (signer.py), the
file's size against the manifest's parts (a truncated or extended file is
refused), then every part's digest, all before the first ``zfs receive``;
each part is hashed again as it is received (the file could change in
between), and a mismatch there destroys what was received.
"""

from __future__ import annotations

import hashlib
import io
import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO

from rexcarcer.base.progress import Transfer
from rexcarcer.base.receive import Feeder
from rexcarcer.storage.base import Storage
from rexcarcer.storage.pipe import copy
from rexcarcer.transfer import ArchiveRejected, TransferError
from rexcarcer.transfer.manifest import Manifest, Part

MAGIC = b"REXCARCER-JAIL\n\0"
HEADER_SPACE = 1 << 20
_LENGTH = struct.Struct(">Q")
_BLOB = struct.Struct(">I")
CHUNK = 1 << 20


@dataclass(frozen=True, slots=True)
class Header:
    manifest: bytes
    signature: bytes
    chain: bytes  # PEM: the signer's certificate, then the CAs below the root


def encode_header(header: Header) -> bytes:
    body = b"".join(_BLOB.pack(len(b)) + b for b in (header.manifest, header.signature,
                                                       header.chain))  # fmt: skip
    out = MAGIC + _LENGTH.pack(len(body)) + body
    if len(out) > HEADER_SPACE:
        raise TransferError(
            f"the export's header is {len(out)} bytes, more than the {HEADER_SPACE} it has",
            hint="the jail's record is unusually large (its .rex file's steps and ENV)",
        )
    return out + bytes(HEADER_SPACE - len(out))


def decode_header(data: bytes) -> Header:
    """The header at the start of ``data`` (at least its first 24 bytes)."""
    if data[: len(MAGIC)] != MAGIC:
        raise ArchiveRejected("this is not a jail export (no REXCARCER-JAIL header)",
                              hint="rex import reads the files `rex export` writes")  # fmt: skip
    if len(data) < len(MAGIC) + _LENGTH.size:
        raise _truncated(len(data), HEADER_SPACE)
    (size,) = _LENGTH.unpack_from(data, len(MAGIC))
    start = len(MAGIC) + _LENGTH.size
    if size > HEADER_SPACE - start:
        raise ArchiveRejected(f"the export's header claims {size} bytes, more than it may have")
    body = data[start : start + size]
    if len(body) < size:
        raise _truncated(len(data), start + size)
    blobs: list[bytes] = []
    at = 0
    for _ in range(3):
        if at + _BLOB.size > len(body):
            raise ArchiveRejected("the export's header is malformed (a blob runs past its end)")
        (n,) = _BLOB.unpack_from(body, at)
        at += _BLOB.size
        if at + n > len(body):
            raise ArchiveRejected("the export's header is malformed (a blob runs past its end)")
        blobs.append(body[at : at + n])
        at += n
    if at != len(body):
        raise ArchiveRejected("the export's header is malformed (bytes after its blobs)")
    return Header(*blobs)


def _truncated(have: int, want: int) -> ArchiveRejected:
    return ArchiveRejected(
        f"the export is truncated: it has {have} bytes where its header says {want}",
        hint="copy the whole file again (compare its size with the exporting host's)",
    )


def read_header(f: IO[bytes]) -> Header:
    try:
        f.seek(0)
        return decode_header(f.read(HEADER_SPACE))
    except OSError as exc:
        raise TransferError(f"cannot read the export: {exc}") from exc


class Writer:
    """Writes an export into ``out``, which must be a regular file (seekable)."""

    def __init__(self, out: IO[bytes], transfer: Transfer) -> None:
        self.out = out
        self.transfer = transfer
        self.parts: list[Part] = []
        try:
            out.seek(HEADER_SPACE)
            out.truncate()
        except (OSError, io.UnsupportedOperation) as exc:
            raise TransferError(
                f"cannot write the export: {exc}",
                hint="rex export writes a regular file (its header goes at the start "
                "last); not a pipe or a terminal",
            ) from exc

    def add(self, part: str, stream: IO[bytes]) -> Part:
        hasher = hashlib.sha256()

        def each(data: bytes) -> None:
            hasher.update(data)
            self.transfer.advance(len(data))

        self.transfer.start(f"exporting the {part}", None)
        try:
            size = copy(stream, self.out, None, CHUNK, each)
        except OSError as exc:
            raise TransferError(f"cannot write the export: {exc}") from exc
        finally:
            self.transfer.finish()
        made = Part(part, size, hasher.hexdigest())
        self.parts.append(made)
        return made

    def finish(self, header: Header) -> None:
        try:
            self.out.seek(0)
            self.out.write(encode_header(header))
            self.out.flush()
            os.fsync(self.out.fileno())
        except OSError as exc:
            raise TransferError(f"cannot write the export: {exc}") from exc


def regions(manifest: Manifest) -> Iterator[tuple[Part, int]]:
    """Each part and where it starts in the file."""
    at = HEADER_SPACE
    for part in manifest.parts:
        yield part, at
        at += part.size


def check_parts(f: IO[bytes], manifest: Manifest, transfer: Transfer) -> None:
    """The file holds exactly the parts the (verified) manifest lists."""
    try:
        size = os.fstat(f.fileno()).st_size
    except OSError as exc:
        raise TransferError(f"cannot read the export: {exc}") from exc
    want = HEADER_SPACE + manifest.total
    if size < want:
        raise _truncated(size, want)
    if size > want:
        raise ArchiveRejected(
            f"the export has {size - want} bytes after its last part: it was altered",
            hint="use the file as `rex export` wrote it",
        )
    for part, offset in regions(manifest):
        transfer.start(f"checking the {part.part}", part.size)
        try:
            digest = _digest(f, offset, part.size, transfer)
        finally:
            transfer.finish()
        if digest != part.sha256:
            raise ArchiveRejected(
                f"the {part.part} does not match its signed digest: the export was altered "
                "or damaged",
                hint="nothing was received; get an intact copy of the export",
            )


def _digest(f: IO[bytes], offset: int, size: int, transfer: Transfer) -> str:
    hasher = hashlib.sha256()
    try:
        f.seek(offset)
        left = size
        while left:
            data = f.read(min(CHUNK, left))
            if not data:
                raise _truncated(offset + size - left, offset + size)
            hasher.update(data)
            transfer.advance(len(data))
            left -= len(data)
    except OSError as exc:
        raise TransferError(f"cannot read the export: {exc}") from exc
    return hasher.hexdigest()


def receive_part(
    storage: Storage, f: IO[bytes], part: Part, offset: int, temp: str, transfer: Transfer
) -> None:
    """``zfs receive -u temp`` from the part's bytes, hashed again on the way."""
    f.seek(offset)
    feeder = Feeder(f, transfer, size=part.size, decompress=False)
    transfer.start(f"receiving the {part.part}", part.size)
    try:
        feeder.run_into(lambda stream: storage.receive(temp, stream))
    finally:
        transfer.finish()
    if feeder.hexdigest() != part.sha256:
        raise ArchiveRejected(f"the {part.part} changed in the file while it was received",
                              hint="leave the file alone during rex import")  # fmt: skip
