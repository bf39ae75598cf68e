"""The published-base format: locations, manifest, metadata, stream magic, pins."""

from __future__ import annotations

import hashlib
import re
import subprocess
from pathlib import Path

import pytest

from rexcarcer.base import VerificationError
from rexcarcer.base.manifest import (
    Increment,
    Metadata,
    StreamHead,
    is_zfs_stream,
    normalize_pin,
    parse_location,
    parse_manifest,
    parse_metadata,
    parse_stream_head,
    render_manifest,
    render_metadata,
)
from rexcarcer.errors import UsageError

DATA = Path(__file__).parent.parent / "data" / "base"
A, B = "a" * 64, "b" * 64


@pytest.mark.parametrize(
    ("text", "url"),
    [
        ("https://Bases.Example.com/freebsd/FreeBSD-14.1", "https://bases.example.com/freebsd/FreeBSD-14.1"),
        ("https://h/d/x.zfs.bz2", "https://h/d/x"),
        ("https://h/d/x.sha256", "https://h/d/x"),
        ("https://h/d/x.base", "https://h/d/x"),
        (f"http://h:8080/d/x.sha256sig.{A}", "http://h:8080/d/x"),
        ("file:///srv/bases/x", "file:///srv/bases/x"),
        ("file://localhost/srv/bases/x", "file:///srv/bases/x"),
    ],
)  # fmt: skip
def test_locations_drop_a_suffix_and_normalize(text: str, url: str) -> None:
    loc = parse_location(text)
    assert loc.url == url
    assert loc.manifest == url + ".sha256" and loc.stream == url + ".zfs.bz2"
    assert loc.signature(A) == f"{url}.sha256sig.{A}"
    assert loc.directory == url.rsplit("/", 1)[0] + "/"


@pytest.mark.parametrize(
    "text",
    ["ftp://h/x", "https://h/x?y=1", "https://h/x#f", "https:///x", "https://h/",
     "file://otherhost/x", "https://h/d/..", "busybox"],
)  # fmt: skip
def test_bad_locations_are_usage_errors(text: str) -> None:
    with pytest.raises(UsageError):
        parse_location(text)


LOC = parse_location("https://h/d/fb")


def test_manifest_as_sha256sum_writes_it(tmp_path: Path) -> None:
    (tmp_path / "fb.base").write_bytes(b"name=fb\nversion=1\n")
    (tmp_path / "fb.zfs.bz2").write_bytes(b"stream")
    real = subprocess.run(
        ["sha256sum", "fb.base", "fb.zfs.bz2"], cwd=tmp_path, capture_output=True, check=True
    ).stdout
    meta = hashlib.sha256(b"name=fb\nversion=1\n").hexdigest()
    stream = hashlib.sha256(b"stream").hexdigest()
    assert render_manifest("fb", meta, stream) == real
    assert parse_manifest(real, LOC).stream_sha256 == stream


@pytest.mark.parametrize(
    "text",
    [
        f"{A}  fb.base\n{B}  fb.zfs.bz2\n",  # sha256sum
        f"{A} *fb.base\r\n{B} *fb.zfs.bz2\r\n",  # sha256sum --binary, CRLF
        f"{A.upper()} fb.base\n\n{B} fb.zfs.bz2",  # FreeBSD sha256 -r
        f"SHA256 (fb.zfs.bz2) = {B}\nSHA256 (fb.base) = {A}\n",  # FreeBSD sha256
    ],
)
def test_manifest_formats(text: str) -> None:
    m = parse_manifest(text.encode(), LOC)
    assert (m.metadata_sha256, m.stream_sha256) == (A, B)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (f"{A}  fb.base\n{B}  fb.zfs.bz2\n{A}  evil.sh\n", "lists another file, 'evil.sh'"),
        (f"{A}  fb.base\n{B}  ../fb.zfs.bz2\n", "lists another file"),
        (f"{A}  fb.base\n{B}  other.zfs.bz2\n", "lists another file"),
        (f"{A}  fb.base\n{B}  fb.base\n", "lists fb.base twice"),
        (f"{A}  fb.base\n", "does not list fb.zfs.bz2"),
        ("", "does not list fb.base, fb.zfs.bz2"),
        (f"{A[:-1]}  fb.base\n", "not a SHA-256 line"),
        ("é", "not a text file"),
    ],
)
def test_bad_manifests_are_refused(text: str, message: str) -> None:
    with pytest.raises(VerificationError, match=message):
        parse_manifest(text.encode(), LOC)


def test_metadata_round_trip_keeps_unknown_keys() -> None:
    meta = Metadata(
        name="FreeBSD-14.1", version="14.1-RELEASE-p3", os="FreeBSD", osrelease="14.1-RELEASE-p3",
        arch="amd64", created="2026-01-31T12:00:00Z", stream_size=10, compressed_size=5,
        extra={"vendor": "example"},
    )  # fmt: skip
    assert parse_metadata(render_metadata(meta)) == meta


def test_metadata_by_hand_with_comments() -> None:
    meta = parse_metadata(b"# made by hand\n\nname = web\nversion=2026.01\n")
    assert (meta.name, meta.version, meta.stream_size) == ("web", "2026.01", None)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (b"version=1\n", "has no name="),
        (b"name=x\n", "has no version="),
        (b"name=../../etc\nversion=1\n", "would escape the dataset layout"),
        (b"name=a/b\nversion=1\n", "would escape"),
        (b"name=_recv-x\nversion=1\n", "would escape"),
        (b"name=x\nversion=1@2\n", "not a valid base version"),
        (b"name=x\nversion=1\nname=y\n", "name given twice"),
        (b"name=x\nversion=1\nformat=2\n", "unknown format"),
        (b"name=x\nversion=1\nstream_size=-1\n", "number of bytes"),
        (b"name=x\nversion 1\n", "expected key=value"),
        (b"name=x\x01\nversion=1\n", "expected key=value"),
        (b"\xff", "not UTF-8"),
    ],
)
def test_bad_metadata_is_refused(text: bytes, message: str) -> None:
    with pytest.raises(VerificationError, match=message):
        parse_metadata(text)


def _saved_head(name: str) -> tuple[bytes, list[int]]:
    """The bytes of a saved stream head and the guids its comment line names."""
    comment, *rows = (DATA / name).read_text().splitlines()
    guids = [int(g) for g in re.findall(r"(?:guid of|of) \S+: (\d+)", comment)]
    return bytes.fromhex("".join(rows).replace(" ", "")), guids


def test_zfs_magic_on_a_saved_real_stream_head() -> None:
    head, [guid] = _saved_head("zfs-send-head.txt")
    assert is_zfs_stream(head)
    assert parse_stream_head(head) == StreamHead(toguid=guid, fromguid=0)
    # a big-endian sender: every field swapped
    swapped = head[:8] + b"".join(head[i : i + 8][::-1] for i in range(8, 56, 8))
    assert parse_stream_head(swapped) == StreamHead(toguid=guid, fromguid=0)
    assert not is_zfs_stream(head[:55])
    assert not is_zfs_stream(b"\0" * 56)
    assert not is_zfs_stream(b"BZh91AY&SY" + bytes(46))


def test_an_incremental_stream_names_both_snapshots() -> None:
    head, [old, new] = _saved_head("zfs-send-incremental-head.txt")
    assert parse_stream_head(head) == StreamHead(toguid=new, fromguid=old)


def test_manifest_with_increments_as_sha256sum_writes_it(tmp_path: Path) -> None:
    files = {"fb.base": b"meta", "fb.zfs.bz2": b"full", "fb.from-1.0.zfs.bz2": b"i1",
             "fb.from-1.5.zfs.bz2": b"i15"}  # fmt: skip
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    real = subprocess.run(["sha256sum", *files], cwd=tmp_path, capture_output=True,
                          check=True).stdout  # fmt: skip
    digest = {n: hashlib.sha256(d).hexdigest() for n, d in files.items()}
    incs = {"1.0": digest["fb.from-1.0.zfs.bz2"], "1.5": digest["fb.from-1.5.zfs.bz2"]}
    assert render_manifest("fb", digest["fb.base"], digest["fb.zfs.bz2"], incs) == real
    m = parse_manifest(real, LOC)
    assert m.increments == incs and m.stream_sha256 == digest["fb.zfs.bz2"]
    assert LOC.increment("1.0") == "https://h/d/fb.from-1.0.zfs.bz2"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (f"{A}  fb.base\n{B}  fb.zfs.bz2\n{A}  fb.from-1.zfs.bz2\n{B}  fb.from-1.zfs.bz2\n",
         "lists fb.from-1.zfs.bz2 twice"),
        (f"{A}  fb.base\n{B}  fb.zfs.bz2\n{A}  fb.from-../x.zfs.bz2\n", "lists another file"),
        (f"{A}  fb.base\n{B}  fb.zfs.bz2\n{A}  fb.from-.zfs.bz2\n", "lists another file"),
        (f"{A}  fb.base\n{B}  fb.zfs.bz2\n{A}  other.from-1.zfs.bz2\n", "lists another file"),
        (f"{A}  fb.base\n{A}  fb.from-1.zfs.bz2\n", "does not list fb.zfs.bz2"),
    ],
)  # fmt: skip
def test_bad_increments_in_a_manifest(text: str, message: str) -> None:
    with pytest.raises(VerificationError, match=message):
        parse_manifest(text.encode(), LOC)


def test_metadata_with_increments_round_trip() -> None:
    increments = (Increment("1", 7), Increment("2.0-p1", 12345678901234567890))
    meta = Metadata(name="fb", version="3", guid=2**64 - 1, incremental_from=increments)
    text = render_metadata(meta)
    assert b"guid=18446744073709551615\nincremental_from=1@7 2.0-p1@12345678901234567890\n" in text
    assert parse_metadata(text) == meta
    assert meta.increment("2.0-p1") == Increment("2.0-p1", 12345678901234567890)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (b"name=x\nversion=2\nincremental_from=1@5\n", "lists increments but no guid="),
        (b"name=x\nversion=2\nguid=9\nincremental_from=1\n", "is not VERSION@GUID"),
        (b"name=x\nversion=2\nguid=9\nincremental_from=../1@5\n", "is not VERSION@GUID"),
        (b"name=x\nversion=2\nguid=9\nincremental_from=1@x\n", "must be a ZFS guid"),
        (b"name=x\nversion=2\nguid=9\nincremental_from=1@5 1@6\n", "lists 1 twice"),
        (b"name=x\nversion=2\nguid=9\nincremental_from=2@5\n", "names the version itself"),
        (b"name=x\nversion=2\nguid=0\n", "must be a ZFS guid"),
        (b"name=x\nversion=2\nguid=18446744073709551616\n", "must be a ZFS guid"),
    ],
)
def test_bad_increments_in_metadata(text: bytes, message: str) -> None:
    with pytest.raises(VerificationError, match=message):
        parse_metadata(text)


def test_pins() -> None:
    assert normalize_pin(f"sha256:{A.upper()}") == A
    assert normalize_pin(A) == A
    for bad in ("sha256:abc", "md5:" + A, ""):
        with pytest.raises(UsageError, match="bad pin"):
            normalize_pin(bad)
