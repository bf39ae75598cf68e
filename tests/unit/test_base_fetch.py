"""The cached, resumable download: httpx with its shipped MockTransport standing
in for a server (Range, restarts, interruptions, errors), and file sources."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from rexcarcer.base import FetchError, VerificationError
from rexcarcer.base.fetch import (
    FileSource,
    HttpSource,
    Wanted,
    cache_entry,
    cached_download,
    http_client,
)
from rexcarcer.base.progress import LineTransfer
from rexcarcer.progress import QuietProgress

DATA = bytes(range(256)) * 4096  # 1 MiB
URL = "https://bases.test/d/fb.zfs.bz2"


class _Cut(httpx.SyncByteStream):
    def __init__(self, body: bytes, n: int) -> None:
        self.body, self.n = body, n

    def __iter__(self) -> Iterator[bytes]:
        yield self.body[: self.n]
        raise httpx.RemoteProtocolError("peer closed connection without sending complete body")


class Server:
    """Serves ``files`` with Range support; faults switched on per test."""

    def __init__(self, files: dict[str, bytes]) -> None:
        self.files = files
        self.requests: list[tuple[str, str | None]] = []
        self.cut: int | None = None  # close the connection after this many body bytes
        self.ignore_range = False
        self.status: int | None = None

    def __call__(self, request: httpx.Request) -> httpx.Response:
        rng = request.headers.get("range")
        self.requests.append((request.url.path, rng))
        if self.status is not None:
            return httpx.Response(self.status)
        data = self.files.get(request.url.path)
        if data is None:
            return httpx.Response(404)
        status, start, headers = 200, 0, {}
        if rng and not self.ignore_range:
            start = int(rng.removeprefix("bytes=").rstrip("-"))
            if start >= len(data):
                return httpx.Response(416)
            status = 206
            headers["content-range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
        body = data[start:]
        headers["content-length"] = str(len(body))
        stream = _Cut(body, self.cut) if self.cut is not None else httpx.ByteStream(body)
        return httpx.Response(status, headers=headers, stream=stream)


def _source(server: Server) -> HttpSource:
    return HttpSource(http_client(None, transport=httpx.MockTransport(server)))


def _want(data: bytes = DATA, size: int | None = None) -> Wanted:
    return Wanted(URL, hashlib.sha256(data).hexdigest(), ".zfs.bz2", size)


def _get(server: Server, cache: Path, want: Wanted | None = None) -> Path:
    progress = QuietProgress()
    return cached_download(_source(server), want or _want(), cache, LineTransfer(progress, 0))


def test_download_then_cache_hit(tmp_path: Path) -> None:
    server = Server({"/d/fb.zfs.bz2": DATA})
    path = _get(server, tmp_path)
    assert path == cache_entry(tmp_path, _want()) and path.read_bytes() == DATA
    assert server.requests == [("/d/fb.zfs.bz2", None)]
    assert _get(server, tmp_path) == path
    assert len(server.requests) == 1  # the second time downloads nothing


def _flip_a_bit(path: Path, at: int = 1000) -> None:
    data = bytearray(path.read_bytes())
    data[at] ^= 0x01
    path.write_bytes(bytes(data))


def test_a_damaged_cache_entry_is_hashed_and_downloaded_again(tmp_path: Path) -> None:
    server = Server({"/d/fb.zfs.bz2": DATA})
    path = _get(server, tmp_path)
    _flip_a_bit(path)  # damaged on disk since it was verified
    assert _get(server, tmp_path).read_bytes() == DATA
    assert [r for _, r in server.requests] == [None, None]  # downloaded again, whole


def test_a_damaged_cache_entry_that_cannot_be_downloaded_again(tmp_path: Path) -> None:
    server = Server({"/d/fb.zfs.bz2": DATA})
    path = _get(server, tmp_path)
    _flip_a_bit(path)
    server.status = 404
    with pytest.raises(FetchError, match="the cached copy of .* no longer matched its manifest "
                       r"\(sha256 [0-9a-f]{64}, .*\) and was removed; downloading it again "
                       "failed: .* not found"):  # fmt: skip
        _get(server, tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_a_partial_file_resumes_with_range(tmp_path: Path) -> None:
    server = Server({"/d/fb.zfs.bz2": DATA})
    part = tmp_path / f"{_want().sha256}.zfs.bz2.part"
    part.write_bytes(DATA[:300_000])
    assert _get(server, tmp_path).read_bytes() == DATA
    assert server.requests == [("/d/fb.zfs.bz2", "bytes=300000-")]
    assert not part.exists()


def test_a_server_without_range_restarts_cleanly(tmp_path: Path) -> None:
    server = Server({"/d/fb.zfs.bz2": DATA})
    server.ignore_range = True
    (tmp_path / f"{_want().sha256}.zfs.bz2.part").write_bytes(b"x" * 1000)
    assert _get(server, tmp_path).read_bytes() == DATA


def test_a_stale_part_is_redone_from_zero(tmp_path: Path) -> None:
    server = Server({"/d/fb.zfs.bz2": DATA})
    (tmp_path / f"{_want().sha256}.zfs.bz2.part").write_bytes(b"other content")
    assert _get(server, tmp_path).read_bytes() == DATA
    assert [r for _, r in server.requests] == ["bytes=13-", None]


def test_a_part_longer_than_the_file_restarts(tmp_path: Path) -> None:
    server = Server({"/d/fb.zfs.bz2": DATA})
    (tmp_path / f"{_want().sha256}.zfs.bz2.part").write_bytes(DATA + b"more")
    assert _get(server, tmp_path).read_bytes() == DATA


def test_interruptions_retry_then_resume_next_time(tmp_path: Path) -> None:
    server = Server({"/d/fb.zfs.bz2": DATA})
    server.cut = 100_000
    with pytest.raises(FetchError, match="interrupted after 300000 bytes") as err:
        _get(server, tmp_path)
    assert err.value.hint == "run the command again: it resumes where it stopped"
    assert not cache_entry(tmp_path, _want()).exists()  # nothing trusted
    assert [r for _, r in server.requests] == [None, "bytes=100000-", "bytes=200000-"]
    server.cut = None
    assert _get(server, tmp_path).read_bytes() == DATA
    assert server.requests[-1] == ("/d/fb.zfs.bz2", "bytes=300000-")


def test_tampered_file_leaves_nothing(tmp_path: Path) -> None:
    server = Server({"/d/fb.zfs.bz2": DATA[:-1] + b"!"})
    with pytest.raises(VerificationError, match="does not match its manifest: sha256"):
        _get(server, tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_truncated_file_is_named_so(tmp_path: Path) -> None:
    server = Server({"/d/fb.zfs.bz2": DATA[:1000]})
    with pytest.raises(VerificationError, match="truncated: 1000 bytes, the metadata says"):
        _get(server, tmp_path, _want(size=len(DATA)))
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("status", "message"),
    [(404, r"fb.zfs.bz2 not found \(HTTP 404\)"), (500, "server error HTTP 500"),
     (403, "HTTP 403 Forbidden")],
)  # fmt: skip
def test_http_errors(tmp_path: Path, status: int, message: str) -> None:
    server = Server({})
    server.status = status
    with pytest.raises(FetchError, match=message):
        _get(server, tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_connection_refused() -> None:
    source = HttpSource(http_client(None))
    with pytest.raises(FetchError, match=r"cannot connect to 127.0.0.1:9: .*refused"):
        source.get("http://127.0.0.1:9/x.sha256", limit=10)


def test_small_files_are_limited() -> None:
    server = Server({"/x.sha256": b"y" * 100})
    assert _source(server).get("https://h/x.sha256", limit=100) == b"y" * 100
    assert _source(server).get("https://h/nope", limit=1, missing_ok=True) is None
    with pytest.raises(VerificationError, match="larger than"):
        _source(server).get("https://h/x.sha256", limit=99)


def test_wrong_content_range_is_refused(tmp_path: Path) -> None:
    def lying(request: httpx.Request) -> httpx.Response:
        return httpx.Response(206, headers={"content-range": "bytes 0-9/10"}, content=b"0" * 10)

    source = HttpSource(http_client(None, transport=httpx.MockTransport(lying)))
    (tmp_path / f"{_want().sha256}.zfs.bz2.part").write_bytes(b"abc")
    with pytest.raises(FetchError, match="wrong range"):
        cached_download(source, _want(), tmp_path, LineTransfer(QuietProgress()))


def test_file_source(tmp_path: Path) -> None:
    (tmp_path / "pub").mkdir()
    (tmp_path / "pub" / "fb.zfs.bz2").write_bytes(DATA)
    want = Wanted(f"file://{tmp_path}/pub/fb.zfs.bz2", _want().sha256, ".zfs.bz2")
    progress = QuietProgress()
    path = cached_download(FileSource(), want, tmp_path / "cache", LineTransfer(progress, 0))
    assert path.read_bytes() == DATA
    assert progress.lines[0] == "downloading fb.zfs.bz2 (1.0 MiB)"
    assert FileSource().listing(f"file://{tmp_path}/pub/") == "fb.zfs.bz2"
    assert FileSource().get(f"file://{tmp_path}/none", limit=1, missing_ok=True) is None
    with pytest.raises(FetchError, match="does not exist"):
        FileSource().get(f"file://{tmp_path}/none", limit=1)
