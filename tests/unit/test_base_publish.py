"""rex base publish / sign: the four files, readable by sha256sum and openssl."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import IO

import pytest

from rexcarcer.base import VerificationError
from rexcarcer.base.fetch import FileSource
from rexcarcer.base.local import find_base
from rexcarcer.base.manifest import Increment, parse_location, parse_manifest, parse_metadata
from rexcarcer.base.publish import load_signers, publish_base, sign_published
from rexcarcer.base.sign import now
from rexcarcer.base.trust import TrustStore
from rexcarcer.base.verify import verify_remote
from rexcarcer.base.versions import keep_own_props
from rexcarcer.config import TESTING_ENV, load_config
from rexcarcer.errors import Conflict, NotFound, UsageError
from rexcarcer.host import Host
from rexcarcer.progress import QuietProgress
from rexcarcer.run import ScriptedRunner
from rexcarcer.runtime.fake import FakeRuntime
from rexcarcer.state.memory import MemoryStore
from rexcarcer.storage.fake import FakeStorage
from tests.base_support import (
    dated_signer,
    fake_zfs_stream,
    openssl,
    openssl_signer,
    stream_guids,
)

STREAM = fake_zfs_stream(100_000)


class SendingStorage(FakeStorage):
    """``zfs send``: STREAM for the first version; other streams carry the guids
    of their snapshots, as zfs(8) writes them."""

    def send(self, snapshot: str, out: IO[bytes], *, since: str | None = None) -> None:
        to = self.snap_meta[snapshot].guid
        if snapshot == "bases/fb@14.1" and since is None:
            out.write(STREAM)
            return
        out.write(fake_zfs_stream(100_000 if since is None else 2_000, toguid=to,
                                  fromguid=self.snap_meta[since].guid if since else 0))  # fmt: skip


@pytest.fixture
def host(tmp_path: Path) -> Host:
    config = load_config(root=tmp_path / "state", environ=TESTING_ENV)
    h = Host(config, ScriptedRunner(), SendingStorage(tmp_path / "zfs"), FakeRuntime(),
             MemoryStore(), QuietProgress())  # fmt: skip
    h.storage.ensure_layout()
    h.storage.create("bases/fb", props={"version": "14.1", "osrelease": "14.1-RELEASE"})
    h.storage.snapshot("bases/fb@14.1")
    return h


def test_publish_writes_files_openssl_and_sha256sum_accept(host: Host, tmp_path: Path) -> None:
    rsa, ec = openssl_signer(tmp_path, "rsa", "rsa"), openssl_signer(tmp_path, "ec", "ec")
    out = tmp_path / "www"
    done = publish_base(host, "fb", out, load_signers([(rsa.key, rsa.cert), (ec.key, ec.cert)]))
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted(
        [
            "fb.zfs.bz2",
            "fb.base",
            "fb.sha256",
            f"fb.sha256sig.{rsa.fingerprint}",
            f"fb.sha256sig.{ec.fingerprint}",
        ]
    )
    check = subprocess.run(["sha256sum", "-c", "fb.sha256"], cwd=out, capture_output=True)
    assert check.returncode == 0, check.stdout
    for s in (rsa, ec):
        ok = openssl("dgst", "-sha256", "-verify", s.pubkey(), "-signature",
                     out / f"fb.sha256sig.{s.fingerprint}", out / "fb.sha256")  # fmt: skip
        assert ok.strip() == b"Verified OK"
    plain = subprocess.run(["bzcat", out / "fb.zfs.bz2"], capture_output=True, check=True).stdout
    assert plain == STREAM
    meta = parse_metadata((out / "fb.base").read_bytes())
    assert (meta.name, meta.version, meta.osrelease, meta.os) == (
        "fb",
        "14.1",
        "14.1-RELEASE",
        "FreeBSD",
    )
    assert meta.stream_size == len(STREAM)
    assert meta.compressed_size == (out / "fb.zfs.bz2").stat().st_size
    trust = TrustStore(tmp_path / "trust")
    trust.add(ec.cert, now())
    loc = parse_location(f"file://{out}/fb")
    verified = verify_remote(FileSource(), loc, trust, pin=done.digest, when=now())
    assert verified.digest == done.digest
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporary files left


def test_republish_needs_force_and_drops_stale_signatures(host: Host, tmp_path: Path) -> None:
    a, b = openssl_signer(tmp_path, "a", "ec"), openssl_signer(tmp_path, "b", "ec")
    out = tmp_path / "www"
    publish_base(host, "fb", out, load_signers([(a.key, a.cert)]))
    with pytest.raises(Conflict, match="already exists"):
        publish_base(host, "fb", out, load_signers([(b.key, b.cert)]))
    publish_base(host, "fb", out, load_signers([(b.key, b.cert)]), force=True)
    assert [p.name for p in out.glob("fb.sha256sig.*")] == [f"fb.sha256sig.{b.fingerprint}"]


def test_cosign_checks_the_files_first(host: Host, tmp_path: Path) -> None:
    a, b = openssl_signer(tmp_path, "a", "rsa"), openssl_signer(tmp_path, "b", "ec")
    out = tmp_path / "www"
    publish_base(host, "fb", out, load_signers([(a.key, a.cert)]))
    written = sign_published(str(out / "fb"), load_signers([(b.key, b.cert)]))
    assert written == (out / f"fb.sha256sig.{b.fingerprint}",)
    (out / "fb.base").write_text("name=fb\nversion=evil\n")
    with pytest.raises(VerificationError, match="does not match"):
        sign_published(str(out / "fb.sha256"), load_signers([(b.key, b.cert)]))


def test_signers_are_checked_before_any_work(tmp_path: Path) -> None:
    a, b = openssl_signer(tmp_path, "a", "ec"), openssl_signer(tmp_path, "b", "ec")
    old = dated_signer(tmp_path, "old", start_days=-10, end_days=-1)
    with pytest.raises(UsageError, match="needs a signer"):
        load_signers([])
    with pytest.raises(UsageError, match="does not belong"):
        load_signers([(a.key, b.cert)])
    with pytest.raises(VerificationError, match="expired"):
        load_signers([(old.key, old.cert)])
    with pytest.raises(UsageError, match="cannot read key"):
        load_signers([(tmp_path / "none.key", a.cert)])


def _new_version(host: Host, version: str, dataset: str = "bases/fb") -> None:
    """A newer version of fb, as `rex base import DIR fb` makes it."""
    from rexcarcer.base.local import add_version

    src = host.config.root.parent / f"tree-{version}"
    src.mkdir()
    (src / "v").write_text(version)
    add_version(host, src, "fb", version=version, origin=str(src))
    assert find_base(host, "fb").snapshot == f"{dataset}@{version}"


def test_publish_with_increments_lists_every_stream_in_one_manifest(
    host: Host, tmp_path: Path
) -> None:
    signer = openssl_signer(tmp_path, "ec", "ec")
    _new_version(host, "14.2")
    _new_version(host, "14.3")
    out = tmp_path / "www"
    done = publish_base(host, "fb", out, load_signers([(signer.key, signer.cert)]),
                        incremental_from=["14.1", "14.2"])  # fmt: skip
    names = [p.name for p in done.files]
    assert names == ["fb.zfs.bz2", "fb.from-14.1.zfs.bz2", "fb.from-14.2.zfs.bz2", "fb.base",
                     "fb.sha256", f"fb.sha256sig.{signer.fingerprint}"]  # fmt: skip
    check = subprocess.run(["sha256sum", "-c", "fb.sha256"], cwd=out, capture_output=True)
    assert check.returncode == 0 and check.stdout.count(b": OK") == 4, check.stdout
    guid = {v: host.storage.snap_meta[f"bases/fb@{v}"].guid  # type: ignore[attr-defined]
            for v in ("14.1", "14.2", "14.3")}  # fmt: skip
    meta = parse_metadata((out / "fb.base").read_bytes())
    assert meta.version == "14.3" and meta.guid == guid["14.3"]
    assert meta.incremental_from == (Increment("14.1", guid["14.1"]),
                                     Increment("14.2", guid["14.2"]))  # fmt: skip
    for v in ("14.1", "14.2"):
        plain = subprocess.run(["bzcat", out / f"fb.from-{v}.zfs.bz2"], capture_output=True,
                               check=True).stdout  # fmt: skip
        assert stream_guids(plain) == (guid["14.3"], guid[v])  # zfs send -i @v @14.3
    trust = TrustStore(tmp_path / "trust")
    trust.add(signer.cert, now())
    verified = verify_remote(FileSource(), parse_location(f"file://{out}/fb"), trust,
                             pin=done.digest, when=now())  # fmt: skip
    assert set(verified.manifest.increments) == {"14.1", "14.2"}
    ok = openssl("dgst", "-sha256", "-verify", signer.pubkey(), "-signature",
                 out / f"fb.sha256sig.{signer.fingerprint}", out / "fb.sha256")  # fmt: skip
    assert ok.strip() == b"Verified OK"


def test_a_newer_version_replaces_its_publication_without_force(host: Host, tmp_path: Path) -> None:
    signers = load_signers([(s.key, s.cert) for s in [openssl_signer(tmp_path, "a", "ec")]])
    out = tmp_path / "www"
    publish_base(host, "fb", out, signers)
    _new_version(host, "14.2")
    publish_base(host, "fb", out, signers, incremental_from=["14.1"])
    assert (out / "fb.from-14.1.zfs.bz2").exists()
    with pytest.raises(Conflict, match=r"already exists \(fb@14.2\)"):
        publish_base(host, "fb", out, signers)  # the same version again needs --force
    _new_version(host, "14.3")
    publish_base(host, "fb", out, signers, incremental_from=["14.2"])
    assert sorted(p.name for p in out.glob("fb.from-*")) == ["fb.from-14.2.zfs.bz2"]
    listed = parse_manifest((out / "fb.sha256").read_bytes(), parse_location(f"file://{out}/fb"))
    assert list(listed.increments) == ["14.2"]


def test_increments_only_from_older_snapshots_of_the_same_dataset(
    host: Host, tmp_path: Path
) -> None:
    signers = load_signers([(s.key, s.cert) for s in [openssl_signer(tmp_path, "a", "ec")]])
    out = tmp_path / "www"
    with pytest.raises(NotFound, match="has no version '9' to publish an increment from"):
        publish_base(host, "fb", out, signers, incremental_from=["9"])
    with pytest.raises(UsageError, match="is not older than the version published"):
        publish_base(host, "fb", out, signers, incremental_from=["14.1"])
    # a version received in full beside the others lives in a dataset of its own
    keep_own_props(host, find_base(host, "fb"))
    host.storage.create("bases/fb:15.0")
    host.storage.snapshot("bases/fb:15.0@15.0")
    host.storage.set_props("bases/fb:15.0@15.0", {"id": "x", "complete": "1"})
    host.storage.set_props("bases/fb", {"version": "15.0"})
    with pytest.raises(UsageError, match="not snapshots of one dataset"):
        publish_base(host, "fb", out, signers, incremental_from=["14.1"])
    assert not out.exists()
