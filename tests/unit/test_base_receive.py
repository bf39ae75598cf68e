"""bunzip2 | zfs receive, and the whole fetch on the in-memory drivers (a storage
fake that "receives" any stream starting with the ZFS magic)."""

from __future__ import annotations

import bz2
import hashlib
import io
import subprocess
from pathlib import Path
from typing import IO

import pytest

from rexcarcer.base import FetchError, VerificationError
from rexcarcer.base.local import jails_using, list_bases
from rexcarcer.base.manifest import is_zfs_stream
from rexcarcer.base.publish import compress_stream
from rexcarcer.base.receive import (
    Feeder,
    bunzip,
    cache_dir,
    ensure_base,
    fetch_base,
    local_base_for,
)
from rexcarcer.base.sign import now
from rexcarcer.base.source import Bases
from rexcarcer.base.trust import TrustStore, trust_dir
from rexcarcer.config import TESTING_ENV, load_config
from rexcarcer.errors import Conflict, StorageError
from rexcarcer.host import Host
from rexcarcer.progress import QuietProgress
from rexcarcer.rexfile.ast import Base
from rexcarcer.run import ScriptedRunner
from rexcarcer.runtime.fake import FakeRuntime
from rexcarcer.state.memory import MemoryStore
from tests.base_support import (
    ReceivingStorage,
    Signer,
    fake_zfs_stream,
    openssl_signer,
    write_published,
)

STREAM = fake_zfs_stream(300_000)


def _chunks(data: bytes, n: int = 65536) -> list[bytes]:
    return [data[i : i + n] for i in range(0, len(data), n)]


def test_bunzip_reads_concatenated_streams() -> None:
    data = bz2.compress(b"one" * 1000) + bz2.compress(b"two" * 5000)
    assert b"".join(bunzip(iter(_chunks(data, 7)))) == b"one" * 1000 + b"two" * 5000


def test_bunzip_refuses_truncated_and_foreign_data() -> None:
    data = bz2.compress(STREAM)
    with pytest.raises(VerificationError, match="truncated"):
        list(bunzip(iter([data[:-10]])))
    with pytest.raises(VerificationError, match="not bzip2-compressed"):
        list(bunzip(iter([STREAM])))


def test_parallel_compression_is_read_by_bzcat() -> None:
    out = io.BytesIO()
    _, compressed, raw = compress_stream(io.BytesIO(STREAM * 40).read, out.write, workers=3)
    assert raw == len(STREAM) * 40 and compressed == len(out.getvalue())
    plain = subprocess.run(["bzcat"], input=out.getvalue(), capture_output=True, check=True)
    assert plain.stdout == STREAM * 40
    assert b"".join(bunzip(iter(_chunks(out.getvalue())))) == STREAM * 40


def _feeder(data: bytes) -> Feeder:
    from rexcarcer.base.progress import LineTransfer

    return Feeder(io.BytesIO(bz2.compress(data)), LineTransfer(QuietProgress()))


def test_feeder_pipes_the_decompressed_stream_and_hashes_the_file() -> None:
    feeder = _feeder(STREAM)
    assert is_zfs_stream(feeder.head())
    got: list[bytes] = []
    feeder.run_into(lambda stream: got.append(stream.read()))
    assert got == [STREAM] and feeder.written == len(STREAM)
    assert feeder.hexdigest() == hashlib.sha256(bz2.compress(STREAM)).hexdigest()


def test_feeder_notices_a_reader_that_stops_early() -> None:
    feeder = _feeder(STREAM * 10)
    feeder.head()
    with pytest.raises(VerificationError, match="stopped before the end"):
        feeder.run_into(lambda stream: stream.read(100) and None)


def test_feeder_passes_the_consumers_error_through() -> None:
    def failing(stream: IO[bytes]) -> None:
        raise StorageError("cannot receive: out of space")

    with pytest.raises(StorageError, match="out of space"):
        _feeder(STREAM * 10).run_into(failing)


# -- fetch on the in-memory drivers -----------------------------------------------


@pytest.fixture
def signer(tmp_path: Path) -> Signer:
    return openssl_signer(tmp_path / "keys", "publisher", "ec")


@pytest.fixture
def host(tmp_path: Path, signer: Signer) -> Host:
    config = load_config(root=tmp_path / "state", environ=TESTING_ENV)
    h = Host(config, ScriptedRunner(), ReceivingStorage(tmp_path / "zfs"), FakeRuntime(),
             MemoryStore(), QuietProgress())  # fmt: skip
    TrustStore(trust_dir(config.root)).add(signer.cert, now())
    return h


def _url(base: Path) -> str:
    return f"file://{base}"


def _datasets(host: Host) -> list[str]:
    return [d.name for d in host.storage.datasets("bases")]


def test_fetch_receives_renames_and_records(host: Host, tmp_path: Path, signer: Signer) -> None:
    base = write_published(tmp_path / "pub", "fb", STREAM, signers=(signer,), version="14.1")
    info = fetch_base(host, _url(base))
    assert info.snapshot == "bases/fb@14.1" and _datasets(host) == ["bases/fb"]
    assert (host.storage.mountpoint("bases/fb") / "stream").read_bytes() == STREAM
    props = info.props
    assert props["url"] == _url(base) and props["signer"] == signer.fingerprint
    assert props["size"] == str(len(STREAM)) and props["complete"] == "1"
    assert props["id"] == props["digest"] and len(props["digest"]) == 64
    stream_digest = hashlib.sha256(Path(f"{base}.zfs.bz2").read_bytes()).hexdigest()
    assert [p.name for p in cache_dir(host).iterdir()] == [f"{stream_digest}.zfs.bz2"]
    again = fetch_base(host, _url(base))
    assert again == info
    assert "Base fb is already here" in host.progress.messages[-1]  # type: ignore[attr-defined]


def test_base_url_in_a_rexfile_is_fetched_once(host: Host, tmp_path: Path, signer: Signer) -> None:
    base = write_published(tmp_path / "pub", "fb", STREAM, signers=(signer,))
    info = Bases().ensure(host, Base(_url(base)))
    for f in (tmp_path / "pub").iterdir():  # no network needed any more
        f.unlink()
    assert ensure_base(host, _url(base)) == info
    assert Bases().ensure(host, Base(_url(base), info.props["digest"])) == info
    assert local_base_for(host, _url(base), "sha256:" + "0" * 64) is None
    assert Bases().ensure(host, Base("fb", info.props["digest"])) == info
    with pytest.raises(Conflict, match="does not match the pin"):
        Bases().ensure(host, Base("fb", "0" * 64))


def test_not_a_zfs_stream_leaves_nothing(host: Host, tmp_path: Path, signer: Signer) -> None:
    base = write_published(tmp_path / "pub", "fb", b"#!/bin/sh\n" * 100, signers=(signer,))
    with pytest.raises(VerificationError, match="is not a ZFS send stream"):
        fetch_base(host, _url(base))
    assert _datasets(host) == [] and list(cache_dir(host).iterdir()) == []


def _replace_cache_entry(host: Host, stream: bytes) -> None:
    [entry] = cache_dir(host).iterdir()
    entry.write_bytes(bz2.compress(stream))  # a good bzip2 of a stream that is not the base


def test_a_damaged_cache_entry_is_never_received(
    host: Host, tmp_path: Path, signer: Signer
) -> None:
    base = write_published(tmp_path / "pub", "fb", STREAM, signers=(signer,))
    fetch_base(host, _url(base))
    host.storage.destroy("bases/fb", recursive=True)  # as `rex base rm` does; the cache stays
    _replace_cache_entry(host, fake_zfs_stream(5000))
    assert isinstance(host.storage, ReceivingStorage)
    assert fetch_base(host, _url(base)).name == "fb"
    assert host.storage.received == [STREAM, STREAM]  # the damaged entry never reached zfs
    [entry] = cache_dir(host).iterdir()
    assert entry.read_bytes() == Path(f"{base}.zfs.bz2").read_bytes()  # downloaded again


def test_a_damaged_cache_entry_without_its_download_is_refused(
    host: Host, tmp_path: Path, signer: Signer
) -> None:
    base = write_published(tmp_path / "pub", "fb", STREAM, signers=(signer,))
    fetch_base(host, _url(base))
    host.storage.destroy("bases/fb", recursive=True)
    _replace_cache_entry(host, fake_zfs_stream(5000))
    Path(f"{base}.zfs.bz2").unlink()  # the publisher's stream is gone
    with pytest.raises(FetchError, match=r"no longer matched its manifest .* downloading it "
                       r"again failed: .*fb\.zfs\.bz2 does not exist"):  # fmt: skip
        fetch_base(host, _url(base))
    assert isinstance(host.storage, ReceivingStorage)
    assert host.storage.received == [STREAM] and _datasets(host) == []
    assert list(cache_dir(host).iterdir()) == []


def test_a_storage_failure_keeps_the_verified_download(
    host: Host, tmp_path: Path, signer: Signer
) -> None:
    base = write_published(tmp_path / "pub", "fb", STREAM, signers=(signer,))
    assert isinstance(host.storage, ReceivingStorage)
    host.storage.fail = "cannot receive: out of space"
    with pytest.raises(StorageError, match="out of space"):
        fetch_base(host, _url(base))
    assert _datasets(host) == []
    assert len(list(cache_dir(host).iterdir())) == 1  # verified; the retry needs no download
    host.storage.fail = None
    assert fetch_base(host, _url(base)).name == "fb"


def test_same_name_other_content_is_a_conflict(host: Host, tmp_path: Path, signer: Signer) -> None:
    one = write_published(tmp_path / "a", "fb", STREAM, signers=(signer,))
    two = write_published(tmp_path / "b", "fb", STREAM + b"x", signers=(signer,))
    fetch_base(host, _url(one))
    with pytest.raises(Conflict, match="already exists with other content"):
        fetch_base(host, _url(two))


def test_a_killed_receive_is_swept(host: Host, tmp_path: Path, signer: Signer) -> None:
    host.storage.ensure_layout()
    host.storage.create("bases/_recv-old")
    base = write_published(tmp_path / "pub", "fb", STREAM, signers=(signer,))
    fetch_base(host, _url(base))
    assert _datasets(host) == ["bases/fb"]
    assert [b.name for b in list_bases(host)] == ["fb"]


def test_jails_using_a_fetched_base(host: Host, tmp_path: Path, signer: Signer) -> None:
    from rexcarcer.state.base import Put, dumps

    base = write_published(tmp_path / "pub", "fb", STREAM, signers=(signer,))
    info = fetch_base(host, _url(base))
    host.store.commit([], [
        Put("jails/a", dumps({"name": "a", "base": _url(base) + ".sha256"})),
        Put("jails/b", dumps({"name": "b", "base": "fb"})),
        Put("jails/c", dumps({"name": "c", "base": "busybox"})),
    ])  # fmt: skip
    assert jails_using(host, info) == ["a", "b"]
