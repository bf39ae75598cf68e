"""rex base publish / sign: the four files, readable by sha256sum and openssl."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import IO

import pytest

from rexcarcer.base import VerificationError
from rexcarcer.base.fetch import FileSource
from rexcarcer.base.manifest import parse_location, parse_metadata
from rexcarcer.base.publish import load_signers, publish_base, sign_published
from rexcarcer.base.sign import now
from rexcarcer.base.trust import TrustStore
from rexcarcer.base.verify import verify_remote
from rexcarcer.config import TESTING_ENV, load_config
from rexcarcer.errors import Conflict, UsageError
from rexcarcer.host import Host
from rexcarcer.progress import QuietProgress
from rexcarcer.run import ScriptedRunner
from rexcarcer.runtime.fake import FakeRuntime
from rexcarcer.state.memory import MemoryStore
from rexcarcer.storage.fake import FakeStorage
from tests.base_support import dated_signer, fake_zfs_stream, openssl, openssl_signer

STREAM = fake_zfs_stream(100_000)


class SendingStorage(FakeStorage):
    def send(self, snapshot: str, out: IO[bytes]) -> None:
        out.write(STREAM)


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
