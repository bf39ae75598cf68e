"""New versions of a base on the in-memory drivers: an increment when this host
has exactly the snapshot it applies to, the full stream otherwise, refusals that
change nothing, the layout rex 0.1 wrote, pins, removal of one version."""

from __future__ import annotations

import bz2
from pathlib import Path

import pytest

from rexcarcer.base import VerificationError
from rexcarcer.base.local import find_base, list_bases, remove_base, remove_version
from rexcarcer.base.receive import cache_dir, fetch_base
from rexcarcer.base.sign import now
from rexcarcer.base.source import Bases
from rexcarcer.base.trust import TrustStore, trust_dir
from rexcarcer.base.versions import assemble
from rexcarcer.config import TESTING_ENV, load_config
from rexcarcer.errors import Conflict, NotFound
from rexcarcer.host import Host
from rexcarcer.progress import QuietProgress
from rexcarcer.rexfile.ast import Base
from rexcarcer.run import ScriptedRunner
from rexcarcer.runtime.fake import FakeRuntime
from rexcarcer.state.memory import MemoryStore
from rexcarcer.storage.base import Dataset, Snapshot
from tests.base_support import (
    ReceivingStorage,
    Signer,
    fake_zfs_stream,
    openssl_signer,
    write_published,
)

G1, G2, G3 = 0x1111, 0x2222, 0x3333
V1 = fake_zfs_stream(300_000, toguid=G1)
V2 = fake_zfs_stream(300_000, toguid=G2)
I12 = fake_zfs_stream(3_000, toguid=G2, fromguid=G1)  # zfs send -i @1 @2
V3 = fake_zfs_stream(300_000, toguid=G3)
I23 = fake_zfs_stream(2_000, toguid=G3, fromguid=G2)


@pytest.fixture
def signer(tmp_path: Path) -> Signer:
    return openssl_signer(tmp_path / "keys", "publisher", "ec")


def _host(tmp_path: Path, signer: Signer, name: str = "a") -> Host:
    config = load_config(root=tmp_path / name / "state", environ=TESTING_ENV)
    h = Host(config, ScriptedRunner(), ReceivingStorage(tmp_path / name / "zfs"), FakeRuntime(),
             MemoryStore(), QuietProgress())  # fmt: skip
    TrustStore(trust_dir(config.root)).add(signer.cert, now())
    return h


@pytest.fixture
def host(tmp_path: Path, signer: Signer) -> Host:
    return _host(tmp_path, signer)


def _storage(host: Host) -> ReceivingStorage:
    assert isinstance(host.storage, ReceivingStorage)
    return host.storage


def _v1(tmp_path: Path, signer: Signer) -> Path:
    return write_published(tmp_path / "pub", "fb", V1, signers=(signer,), version="1", guid=G1)


def _v2(tmp_path: Path, signer: Signer, inc: tuple[int, bytes] = (G1, I12)) -> Path:
    """The same URL, republished at version 2 with an increment from 1."""
    return write_published(tmp_path / "pub", "fb", V2, signers=(signer,), version="2", guid=G2,
                           increments={"1": inc})  # fmt: skip


def _url(base: Path) -> str:
    return f"file://{base}"


def _snaps(host: Host) -> list[str]:
    return [s.name for s in host.storage.snapshot_details("bases")]


def _messages(host: Host) -> str:
    return "\n".join(host.progress.messages)  # type: ignore[attr-defined]


def test_a_host_with_the_old_version_receives_only_the_increment(
    host: Host, tmp_path: Path, signer: Signer
) -> None:
    one = fetch_base(host, _url(_v1(tmp_path, signer)))
    base = _v2(tmp_path, signer)
    info = fetch_base(host, _url(base))
    assert _storage(host).received == [V1, I12]  # not V2
    assert "as the increment from 1" in _messages(host)
    assert _snaps(host) == ["bases/fb@1", "bases/fb@2"]  # one dataset: blocks shared
    assert (info.version, info.snapshot, info.current) == ("2", "bases/fb@2", "2")
    assert [v.version for v in info.versions] == ["1", "2"] and info.is_current
    assert info.id != one.id and info.props["digest"] != one.props["digest"]
    assert host.storage.get_props("bases/fb")["version"] == "2"
    old = find_base(host, "fb", "1")
    assert (old.id, old.snapshot, old.is_current) == (one.id, "bases/fb@1", False)
    cached = sorted(p.name for p in cache_dir(host).iterdir())
    full2 = bz2.compress(V2)
    assert len(cached) == 2 and not any(len(full2) == (cache_dir(host) / c).stat().st_size
                                        for c in cached)  # fmt: skip
    again = fetch_base(host, _url(base))
    assert again == info and "already here" in _messages(host)


def test_a_host_without_the_old_version_gets_the_full_stream(
    host: Host, tmp_path: Path, signer: Signer
) -> None:
    _v1(tmp_path, signer)
    info = fetch_base(host, _url(_v2(tmp_path, signer)))
    assert _storage(host).received == [V2]
    assert _snaps(host) == ["bases/fb@2"] and [v.version for v in info.versions] == ["2"]


def test_a_tampered_increment_is_refused_and_changes_nothing(
    host: Host, tmp_path: Path, signer: Signer
) -> None:
    fetch_base(host, _url(_v1(tmp_path, signer)))
    base = _v2(tmp_path, signer)
    inc = Path(f"{base}.from-1.zfs.bz2")
    data = bytearray(inc.read_bytes())
    data[len(data) // 2] ^= 0x01
    inc.write_bytes(bytes(data))
    with pytest.raises(VerificationError, match=r"fb.from-1.zfs.bz2 does not match its manifest"):
        fetch_base(host, _url(base))
    assert _storage(host).received == [V1]  # no fallback either: the publisher is suspect
    assert _snaps(host) == ["bases/fb@1"] and find_base(host, "fb").version == "1"
    assert len(list(cache_dir(host).iterdir())) == 1  # only v1's stream


def test_an_increment_whose_header_disagrees_with_the_metadata_is_refused(
    host: Host, tmp_path: Path, signer: Signer
) -> None:
    fetch_base(host, _url(_v1(tmp_path, signer)))
    # signed metadata: from @1 (G1); the stream itself: from another snapshot
    base = _v2(tmp_path, signer, inc=(G1, fake_zfs_stream(3_000, toguid=G2, fromguid=0x99)))
    with pytest.raises(VerificationError, match="is an increment from the snapshot with guid 153"):
        fetch_base(host, _url(base))
    assert _storage(host).received == [V1] and _snaps(host) == ["bases/fb@1"]


def test_an_old_snapshot_of_the_same_name_but_not_the_same_falls_back_to_the_full_stream(
    host: Host, tmp_path: Path, signer: Signer
) -> None:
    fetch_base(host, _url(_v1(tmp_path, signer)))
    # the increment applies to a snapshot "1" with another guid than this host's
    info = fetch_base(host, _url(_v2(tmp_path, signer, inc=(0x4444, I12))))
    assert _storage(host).received == [V1, V2]
    assert "is not the published snapshot" in _messages(host)
    # the full stream cannot be grafted onto bases/fb: a dataset of its own, beside it
    assert _snaps(host) == ["bases/fb@1", "bases/fb:2@2"]
    assert (info.snapshot, [v.version for v in info.versions]) == ("bases/fb:2@2", ["1", "2"])
    assert find_base(host, "fb", "1").snapshot == "bases/fb@1"
    # the next increment goes into the dataset that has its source
    three = write_published(tmp_path / "pub", "fb", V3, signers=(signer,), version="3", guid=G3,
                            increments={"2": (G2, I23), "1": (G1, I12)})  # fmt: skip
    info = fetch_base(host, _url(three))
    assert _storage(host).received[-1] == I23 and info.snapshot == "bases/fb:2@3"
    assert [b.name for b in list_bases(host)] == ["fb"]


def test_an_increment_zfs_receive_refuses_falls_back_to_the_full_stream(
    host: Host, tmp_path: Path, signer: Signer
) -> None:
    fetch_base(host, _url(_v1(tmp_path, signer)))
    _storage(host).fail_incremental = "destination bases/fb has been modified since most " \
        "recent snapshot"  # fmt: skip
    info = fetch_base(host, _url(_v2(tmp_path, signer)))
    assert _storage(host).received == [V1, I12, V2]
    assert "did not apply (destination bases/fb has been modified" in _messages(host)
    assert info.snapshot == "bases/fb:2@2" and _snaps(host) == ["bases/fb@1", "bases/fb:2@2"]


def test_a_base_as_rex_0_1_wrote_it_gets_a_second_version(
    host: Host, tmp_path: Path, signer: Signer
) -> None:
    base = _v1(tmp_path, signer)
    s = _storage(host)
    s.ensure_layout()
    url = _url(base)
    props = {"version": "1", "id": "d1", "digest": "d1", "url": url, "origin": url,
             "signer": signer.fingerprint, "size": "9", "complete": "1"}  # fmt: skip
    s.create("bases/fb", props=props)  # every property on the dataset, none on the snapshot
    s.snapshot("bases/fb@1")
    s.snap_meta["bases/fb@1"].guid = G1
    old = find_base(host, "fb")
    assert (old.version, old.id, [v.version for v in old.versions]) == ("1", "d1", ["1"])
    info = fetch_base(host, _url(_v2(tmp_path, signer)))
    assert s.received == [I12] and info.version == "2"
    assert s.get_props("bases/fb@1")["id"] == "d1"  # kept with its snapshot
    assert find_base(host, "fb", "1").id == "d1"  # its cached images stay its own


def test_pins_keep_a_jail_on_an_older_version(host: Host, tmp_path: Path, signer: Signer) -> None:
    one = fetch_base(host, _url(_v1(tmp_path, signer)))
    base = _v2(tmp_path, signer)
    two = fetch_base(host, _url(base))
    pin = one.props["digest"]
    for ref in (_url(base), "fb"):
        assert Bases().ensure(host, Base(ref)).version == "2"
        pinned = Bases().ensure(host, Base(ref, pin))
        assert (pinned.version, pinned.id, pinned.is_current) == ("1", one.id, False)
        assert Bases().local(host, Base(ref, two.props["digest"])) == two
    with pytest.raises(Conflict, match="does not match the pin"):
        Bases().ensure(host, Base("fb", "0" * 64))


def test_the_url_publishing_an_older_version_again_makes_it_current(
    host: Host, tmp_path: Path, signer: Signer
) -> None:
    fetch_base(host, _url(_v1(tmp_path, signer)))
    fetch_base(host, _url(_v2(tmp_path, signer)))
    info = fetch_base(host, _url(_v1(tmp_path, signer)))  # the publisher went back
    assert info.version == "1" and info.current == "1"
    assert "version 1 is here; it is current again" in _messages(host)
    assert len(_storage(host).received) == 2


def test_a_version_republished_with_other_content_is_a_conflict(
    host: Host, tmp_path: Path, signer: Signer
) -> None:
    fetch_base(host, _url(_v1(tmp_path, signer)))
    other = write_published(tmp_path / "pub", "fb", V1 + b"x", signers=(signer,), version="1",
                            guid=G1)  # fmt: skip
    with pytest.raises(Conflict, match="version 1 of base 'fb' is here with other content"):
        fetch_base(host, _url(other))


def test_a_new_version_from_another_url_is_a_conflict(
    host: Host, tmp_path: Path, signer: Signer
) -> None:
    fetch_base(host, _url(_v1(tmp_path, signer)))
    elsewhere = write_published(tmp_path / "mirror", "fb", V2, signers=(signer,), version="2",
                                guid=G2)  # fmt: skip
    with pytest.raises(Conflict, match="already exists with other content"):
        fetch_base(host, _url(elsewhere))


def test_a_received_snapshot_left_unrecorded_is_recorded_by_its_guid(
    host: Host, tmp_path: Path, signer: Signer
) -> None:
    fetch_base(host, _url(_v1(tmp_path, signer)))
    s = _storage(host)
    s.snapshot("bases/fb@2")  # zfs receive completed, then the run was killed
    s.snap_meta["bases/fb@2"].guid = G2
    s.snapshot("bases/fb@junk")  # something else, never recorded: left alone
    assert [v.version for v in find_base(host, "fb").versions] == ["1"]
    info = fetch_base(host, _url(_v2(tmp_path, signer)))
    assert s.received == [V1] and info.version == "2" and info.snapshot == "bases/fb@2"


def test_a_leftover_that_is_not_the_published_snapshot_is_removed(
    host: Host, tmp_path: Path, signer: Signer
) -> None:
    fetch_base(host, _url(_v1(tmp_path, signer)))
    s = _storage(host)
    s.create("bases/fb:2")
    s.snapshot("bases/fb:2@2")  # a full receive killed after its rename; another guid
    info = fetch_base(host, _url(_v2(tmp_path, signer)))
    assert s.received == [V1, I12] and info.snapshot == "bases/fb@2"
    assert not s.exists("bases/fb:2")


def test_removing_one_version_and_the_whole_base(
    host: Host, tmp_path: Path, signer: Signer
) -> None:
    fetch_base(host, _url(_v1(tmp_path, signer)))
    fetch_base(host, _url(_v2(tmp_path, signer, inc=(0x4444, I12))))  # into bases/fb:2
    s = _storage(host)
    s.clone("bases/fb@1", "jails/old")
    with pytest.raises(Conflict, match="fb@2 is the current version"):
        remove_version(host, "fb", "2")
    with pytest.raises(Conflict, match="fb@1 is used by jails: old"):
        remove_version(host, "fb", "1")
    s.destroy("jails/old")
    s.clone("bases/fb@1", "images/k1", props={"base": find_base(host, "fb", "1").id})
    s.snapshot("images/k1@img")
    remove_version(host, "fb", "1")  # its images go with it; bases/fb stays: it is the base
    assert not s.exists("images/k1") and _snaps(host) == ["bases/fb:2@2"]
    assert [v.version for v in find_base(host, "fb").versions] == ["2"]
    with pytest.raises(NotFound, match="has no version '1'"):
        find_base(host, "fb", "1")
    three = write_published(tmp_path / "pub", "fb", V3, signers=(signer,), version="3", guid=G3,
                            increments={"2": (G2, I23)})  # fmt: skip
    fetch_base(host, _url(three))
    remove_base(host, "fb", [])
    assert [d.name for d in s.datasets("bases")] == [] and _snaps(host) == []


def test_assemble_reads_versions_from_listings() -> None:
    datasets = [
        Dataset("bases/fb", None, None, {"version": "2", "url": "u", "id": "i2", "digest": "d2"}),
        Dataset("bases/fb:3", None),
        Dataset("bases/fbx", None, None, {"version": "1"}),
        Dataset("bases/_recv-fb", None),
    ]
    snaps = [
        Snapshot("bases/fb@1", 11, 5, {"id": "i1", "digest": "d1", "complete": "1"}),
        Snapshot("bases/fb@2", 12, 7),  # rex 0.1: the dataset's properties
        Snapshot("bases/fbx@1", 13, 8),
        Snapshot("bases/fb:3@3", 14, 9, {"id": "i3", "complete": "1"}),
        Snapshot("bases/fb@junk", 15, 10),  # not recorded: not a version
        Snapshot("bases/_recv-fb@s", 16, 11),
    ]
    info = assemble("fb", datasets, snaps)
    assert info is not None
    assert [(v.version, v.snapshot, v.guid) for v in info.versions] == [
        ("1", "bases/fb@1", 11), ("2", "bases/fb@2", 12), ("3", "bases/fb:3@3", 14)]  # fmt: skip
    assert (info.version, info.id, info.props["url"], info.props["digest"]) == (
        "2",
        "i2",
        "u",
        "d2",
    )
    assert info.at("1") is not None and info.at("1").props["digest"] == "d1"  # type: ignore[union-attr]
    assert info.at("3").props == {"id": "i3", "complete": "1"}  # type: ignore[union-attr]
    assert assemble("other", datasets, snaps) is None
