"""Signed bases end to end: the real ``rex`` CLI in its namespace, real zfs-fuse,
a real HTTPS server (trustme CA) on 127.0.0.1 in the same namespace.

Every refusal of issue 3 has its own test, and each checks that nothing was
left behind: no dataset under bases/ but the fixture's busybox, and no cache
entry (a ``.part`` is allowed only after an interrupted download, which is
what a later run resumes).
"""

from __future__ import annotations

import bz2
import hashlib
import json
import random
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import trustme

from tests.base_support import Signer, dated_signer, openssl_signer, resign
from tests.integration.base_server import FileServer
from tests.integration.conftest import Rex, _unmount_below, sh

VERIFY, FETCH = 41, 40  # exit codes of VerificationError, FetchError
_GOLDEN: dict[str, Path] = {}


@dataclass
class Keys:
    publisher: Signer
    stranger: Signer


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Keys:
    d = tmp_path_factory.mktemp("keys")
    return Keys(openssl_signer(d, "publisher", "rsa"), openssl_signer(d, "stranger", "ec"))


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> tuple[trustme.CA, Path]:
    authority = trustme.CA()
    pem = tmp_path_factory.mktemp("ca") / "ca.pem"
    authority.cert_pem.write_to_path(str(pem))
    return authority, pem


def golden(rex: Rex, keys: Keys, busybox_root: Path, where: Path) -> Path:
    """``bbpub``, published once by ``rex base publish`` from the busybox root."""
    if "dir" not in _GOLDEN:
        rex.run("base", "import", busybox_root, "bbpub", "--version", "1.0")
        rex.run("base", "publish", "bbpub", where, "--key", keys.publisher.key,
                "--cert", keys.publisher.cert)  # fmt: skip
        rex.run("base", "rm", "bbpub")
        _GOLDEN["dir"] = where
    return _GOLDEN["dir"]


@dataclass
class Site:
    server: FileServer
    dir: Path  # what the server serves under /bases/

    @property
    def url(self) -> str:
        return f"{self.server.url}/bases/bbpub"

    @property
    def base(self) -> Path:
        return self.dir / "bbpub"


@pytest.fixture
def site(
    rex: Rex, keys: Keys, ca: tuple[trustme.CA, Path], busybox_root: Path, tmp_path: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Site]:  # fmt: skip
    src = golden(rex, keys, busybox_root, tmp_path_factory.mktemp("golden"))
    www = tmp_path / "www"
    shutil.copytree(src, www / "bases")
    rex.env["REX_CA_BUNDLE"] = str(ca[1])
    rex.run("trust", "add", keys.publisher.cert)
    with FileServer(www, netns=rex.netns, tls=ca[0]) as server:
        yield Site(server, www / "bases")


def only_busybox(rex: Rex) -> None:
    names = sh("zfs", "list", "-H", "-o", "name", "-t", "all", "-r", f"{rex.dataset}/bases")
    assert names.stdout.split() == [
        f"{rex.dataset}/bases", f"{rex.dataset}/bases/busybox", f"{rex.dataset}/bases/busybox@1",
    ]  # fmt: skip


def nothing_left(rex: Rex, *, partial_ok: bool = False) -> None:
    only_busybox(rex)
    cache = rex.root / "cache" / "bases"
    entries = sorted(p.name for p in cache.iterdir()) if cache.exists() else []
    if partial_ok:
        entries = [e for e in entries if not e.endswith(".part")]
    assert entries == []


def refused(rex: Rex, url: str, *args: str, code: int = VERIFY) -> str:
    done = rex.run("base", "fetch", url, *args, check=False)
    assert done.returncode == code, f"exit {done.returncode}\n{done.stderr}"
    assert "Traceback" not in done.stderr and "error: " in done.stderr
    return done.stderr


def republish(base: Path, signers: tuple[Signer, ...], *, meta: bytes | None = None,
              stream: bytes | None = None, extra: bytes = b"") -> None:  # fmt: skip
    """Change a published base on purpose, then write its manifest with sha256sum
    and sign it with openssl, as a (malicious or careless) trusted publisher would."""
    if meta is not None:
        Path(f"{base}.base").write_bytes(meta)
    if stream is not None:
        Path(f"{base}.zfs.bz2").write_bytes(stream)
    lines = sh("sha256sum", f"{base.name}.base", f"{base.name}.zfs.bz2", cwd=base.parent).stdout
    Path(f"{base}.sha256").write_bytes(lines.encode() + extra)
    for sig in base.parent.glob(f"{base.name}.sha256sig.*"):
        sig.unlink()
    resign(base, signers)


# -- what works -----------------------------------------------------------------------


def test_publish_fetch_list_and_remove_over_https(rex: Rex, site: Site, keys: Keys) -> None:
    done = rex.run("base", "fetch", site.url)
    assert done.stdout.strip() == f"{rex.dataset}/bases/bbpub@1.0"
    assert "downloading bbpub.zfs.bz2" in done.stderr
    assert site.server.control.gets(".zfs.bz2") == [None]
    [entry] = [b for b in rex.json("base", "ls") if b["name"] == "bbpub"]  # type: ignore[attr-defined]
    manifest = Path(f"{site.base}.sha256").read_bytes()
    assert entry["url"] == entry["origin"] == site.url
    assert entry["digest"] == hashlib.sha256(manifest).hexdigest()
    assert entry["signer"] == [keys.publisher.fingerprint] and entry["jails"] == []
    assert entry["size"] > 1_000_000
    assert "publisher (" in rex.run("base", "ls").stdout
    again = rex.run("base", "fetch", site.url)
    assert "already here" in again.stderr
    assert site.server.control.gets(".zfs.bz2") == [None]  # nothing downloaded again
    ds = f"{rex.dataset}/bases/bbpub"
    sh("zfs", "mount", ds)
    try:
        mnt = sh("zfs", "get", "-H", "-o", "value", "mountpoint", ds).stdout.strip()
        assert (Path(mnt) / "bin" / "busybox").is_file()
    finally:
        sh("zfs", "umount", ds)
    rex.run("base", "rm", "bbpub")
    only_busybox(rex)
    cached = list((rex.root / "cache" / "bases").glob("*.zfs.bz2"))
    assert len(cached) == 1  # kept: fetching again needs no download
    rex.run("base", "fetch", site.url)
    assert site.server.control.gets(".zfs.bz2") == [None]


def test_a_damaged_cache_entry_is_downloaded_again(rex: Rex, site: Site) -> None:
    rex.run("base", "fetch", site.url)
    rex.run("base", "rm", "bbpub")
    [entry] = (rex.root / "cache" / "bases").glob("*.zfs.bz2")
    data = bytearray(entry.read_bytes())
    data[len(data) // 2] ^= 0x01  # one bit, damaged on disk after it was verified
    entry.write_bytes(bytes(data))
    done = rex.run("base", "fetch", site.url)
    assert done.stdout.strip() == f"{rex.dataset}/bases/bbpub@1.0"
    assert "does not match its manifest" in done.stderr, done.stderr
    assert site.server.control.gets(".zfs.bz2") == [None, None]  # hashed, then fetched again
    assert entry.read_bytes() == Path(f"{site.base}.zfs.bz2").read_bytes()


def test_plain_http_and_file_urls(rex: Rex, site: Site) -> None:
    with FileServer(site.dir.parent, netns=rex.netns) as plain:
        done = rex.run("base", "fetch", f"{plain.url}/bases/bbpub")
        assert done.stdout.strip() == f"{rex.dataset}/bases/bbpub@1.0"
        assert plain.control.gets(".zfs.bz2") == [None]
    rex.run("base", "rm", "bbpub")
    shutil.rmtree(rex.root / "cache")
    done = rex.run("base", "fetch", f"file://{site.base}.zfs.bz2")
    assert "downloading bbpub.zfs.bz2" in done.stderr
    [entry] = [b for b in rex.json("base", "ls") if b["name"] == "bbpub"]  # type: ignore[attr-defined]
    assert entry["url"] == f"file://{site.base}"


def test_a_base_published_with_sha256sum_and_openssl_only(rex: Rex, site: Site, keys: Keys) -> None:
    hand = site.dir / "handmade"
    shutil.copy(f"{site.base}.zfs.bz2", f"{hand}.zfs.bz2")
    meta = b"# written by hand\nformat=1\nname=handmade\nversion=7\nos=FreeBSD\n"
    republish(hand, (keys.publisher,), meta=meta)
    done = rex.run("base", "fetch", f"{site.server.url}/bases/handmade.sha256")
    assert done.stdout.strip() == f"{rex.dataset}/bases/handmade@7"  # snapshot renamed


def test_a_signature_named_as_openssl_prints_the_fingerprint(
    rex: Rex, site: Site, keys: Keys
) -> None:
    """``openssl x509 -fingerprint -sha256`` prints upper-case hex with colons; a
    publisher who only removes the colons names the signature file in upper case."""
    out = sh("openssl", "x509", "-in", keys.publisher.cert, "-noout", "-fingerprint", "-sha256")
    upper = out.stdout.strip().split("=", 1)[1].replace(":", "")
    assert upper.lower() == keys.publisher.fingerprint and upper != upper.lower()
    sig = Path(f"{site.base}.sha256sig.{keys.publisher.fingerprint}")
    sig.rename(f"{site.base}.sha256sig.{upper}")
    site.server.control.faults.no_listing = True  # only the file names can be tried
    done = rex.run("base", "fetch", site.url)
    assert done.stdout.strip() == f"{rex.dataset}/bases/bbpub@1.0"
    assert not [p for p, _ in site.server.control.log if p.endswith("/bases/")]
    rex.run("base", "rm", "bbpub")
    rex.run("base", "fetch", f"file://{site.base}")


def test_base_url_in_a_rexfile(rex: Rex, site: Site, tmp_path: Path) -> None:
    digest = hashlib.sha256(Path(f"{site.base}.sha256").read_bytes()).hexdigest()
    app = tmp_path / "app.rex"
    app.write_text(f"BASE {site.url} sha256:{digest}\nPROVISION RUN echo hi > /hi\n")
    rex.run("up", app)
    assert rex.run("exec", "app", "--", "cat", "/hi").stdout == "hi\n"
    requests = len(site.server.control.log)
    rex.run("up", app)
    assert len(site.server.control.log) == requests  # the second up downloads nothing
    [entry] = [b for b in rex.json("base", "ls") if b["name"] == "bbpub"]  # type: ignore[attr-defined]
    assert entry["jails"] == ["app"]
    rm = rex.run("base", "rm", "bbpub", check=False)
    assert rm.returncode == 12 and "used by jails: app" in rm.stderr
    rex.run("destroy", "app")


def test_an_interrupted_download_resumes(rex: Rex, site: Site) -> None:
    site.server.control.faults.cut = 200_000
    err = refused(rex, site.url, code=FETCH)
    assert "interrupted after 600000 of" in err and "it resumes where it stopped" in err
    nothing_left(rex, partial_ok=True)
    assert list((rex.root / "cache" / "bases").glob("*.part"))
    site.server.control.faults.cut = None
    rex.run("base", "fetch", site.url)
    assert site.server.control.gets(".zfs.bz2")[-1] == "bytes=600000-"


def test_a_server_that_ignores_range_restarts_cleanly(rex: Rex, site: Site) -> None:
    site.server.control.faults.cut = 300_000
    refused(rex, site.url, code=FETCH)
    site.server.control.faults = type(site.server.control.faults)(ignore_range=True)
    rex.run("base", "fetch", site.url)


# -- refusals, each leaving nothing behind ----------------------------------------------


def test_refuses_an_unsigned_base(rex: Rex, site: Site) -> None:
    for sig in site.dir.glob("bbpub.sha256sig.*"):
        sig.unlink()
    assert "is not signed: there is no bbpub.sha256sig" in refused(rex, site.url)
    nothing_left(rex)


def test_refuses_an_untrusted_signer(rex: Rex, site: Site, keys: Keys) -> None:
    republish(site.base, (keys.stranger,))
    err = refused(rex, site.url)
    assert "signed only by signers this host does not trust" in err
    assert keys.stranger.fingerprint in err and "rex trust add" in err
    nothing_left(rex)


def test_refuses_a_bad_signature(rex: Rex, site: Site) -> None:
    manifest = Path(f"{site.base}.sha256")
    manifest.write_bytes(manifest.read_bytes().replace(b"  bbpub.base", b" *bbpub.base"))
    assert "bad signature on" in refused(rex, site.url)
    nothing_left(rex)


def test_refuses_a_tampered_stream(rex: Rex, site: Site) -> None:
    stream = Path(f"{site.base}.zfs.bz2")
    data = bytearray(stream.read_bytes())
    data[len(data) // 2] ^= 0xFF
    stream.write_bytes(bytes(data))
    assert "bbpub.zfs.bz2 does not match its manifest: sha256" in refused(rex, site.url)
    nothing_left(rex)


def test_refuses_tampered_metadata(rex: Rex, site: Site) -> None:
    meta = Path(f"{site.base}.base")
    meta.write_bytes(meta.read_bytes().replace(b"version=1.0", b"version=2.0"))
    assert "bbpub.base does not match the signed manifest" in refused(rex, site.url)
    nothing_left(rex)


def test_refuses_a_truncated_file(rex: Rex, site: Site) -> None:
    stream = Path(f"{site.base}.zfs.bz2")
    stream.write_bytes(stream.read_bytes()[:500_000])
    assert "truncated: 500000 bytes, the metadata says" in refused(rex, site.url)
    nothing_left(rex)


def test_refuses_a_manifest_listing_other_files(rex: Rex, site: Site, keys: Keys) -> None:
    republish(site.base, (keys.publisher,), extra=b"0" * 64 + b"  ../../etc/rc.local\n")
    assert "lists another file, '../../etc/rc.local'" in refused(rex, site.url)
    nothing_left(rex)


def test_refuses_http_404(rex: Rex, site: Site) -> None:
    err = refused(rex, f"{site.server.url}/bases/nothing-here", code=FETCH)
    assert "no base is published at" in err
    nothing_left(rex)


def test_refuses_http_500(rex: Rex, site: Site) -> None:
    site.server.control.faults.status = 500
    assert "server error HTTP 500" in refused(rex, site.url, code=FETCH)
    nothing_left(rex)


def test_refuses_a_refused_connection(rex: Rex, site: Site) -> None:
    url = site.url
    site.server.__exit__()
    assert "cannot connect to 127.0.0.1:" in refused(rex, url, code=FETCH)
    nothing_left(rex)


def test_refuses_a_pin_that_does_not_match(rex: Rex, site: Site) -> None:
    err = refused(rex, site.url, "sha256:" + "0" * 64)
    assert "but the pin says sha256:000" in err
    nothing_left(rex)


def test_refuses_a_stream_that_is_not_zfs(rex: Rex, site: Site, keys: Keys) -> None:
    junk = bz2.compress(b"#!/bin/sh\nrm -rf /\n" * 1000)
    meta = f"name=bbpub\nversion=1.0\ncompressed_size={len(junk)}\n".encode()
    republish(site.base, (keys.publisher,), meta=meta, stream=junk)
    assert "is not a ZFS send stream" in refused(rex, site.url)
    nothing_left(rex)


def test_refuses_a_name_escaping_the_layout(rex: Rex, site: Site, keys: Keys) -> None:
    republish(site.base, (keys.publisher,), meta=b"name=../jails/x\nversion=1.0\n")
    assert "would escape the dataset layout" in refused(rex, site.url)
    nothing_left(rex)


def test_refuses_a_signer_whose_certificate_expired(
    rex: Rex, site: Site, keys: Keys, tmp_path: Path
) -> None:
    old = dated_signer(tmp_path, "old", start_days=-60, end_days=-1)
    shutil.copy(old.cert, rex.root / "trust" / f"{old.fingerprint}.pem")  # trusted, expired since
    republish(site.base, (old,))
    assert "signed, but the certificate of old" in refused(rex, site.url)
    nothing_left(rex)


def test_https_certificates_are_verified(rex: Rex, site: Site) -> None:
    del rex.env["REX_CA_BUNDLE"]
    err = refused(rex, site.url, code=FETCH)
    assert "could not be verified" in err and "REX_CA_BUNDLE" in err
    nothing_left(rex)


# -- trust ------------------------------------------------------------------------------


def test_trust_add_ls_rm(rex: Rex, keys: Keys, tmp_path: Path) -> None:
    old = dated_signer(tmp_path, "old", start_days=-30, end_days=-1)
    future = dated_signer(tmp_path, "future", start_days=5, end_days=30)
    for cert, text in ((old.cert, "expired on"), (future.cert, "is not valid yet")):
        done = rex.run("trust", "add", cert, check=False)
        assert done.returncode == VERIFY and text in done.stderr
    assert rex.json("trust", "ls") == []
    rex.run("trust", "add", keys.stranger.cert)
    [entry] = rex.json("trust", "ls")  # type: ignore[misc]
    assert entry["fingerprint"] == keys.stranger.fingerprint and entry["key"] == "EC P-256"
    assert entry["status"] == "valid" and entry["subject"] == "stranger"
    rex.run("trust", "rm", keys.stranger.fingerprint[:12])
    assert rex.json("trust", "ls") == []
    assert rex.run("trust", "rm", keys.stranger.fingerprint, check=False).returncode == 11


# -- FreeBSD releases -------------------------------------------------------------------


def release_dir(root: Path, busybox_root: Path) -> Path:
    """A release directory in the layout of the FreeBSD mirrors, built locally."""
    tree = root / "tree"
    shutil.copytree(busybox_root, tree, symlinks=True)
    (tree / "bin" / "freebsd-version").write_text(
        '#!/bin/sh\nUSERLAND_VERSION="14.1-RELEASE-p3"\necho $USERLAND_VERSION\n'
    )
    rel = root / "www" / "releases" / "amd64" / "14.1-RELEASE"
    rel.mkdir(parents=True)
    sh("tar", "-C", tree, "-cJf", rel / "base.txz", ".")
    (rel / "kernel.txz").write_bytes(b"not a kernel")
    lines = []
    for name, dist, desc in (("base.txz", "base", "Base system (MANDATORY)"),
                             ("kernel.txz", "kernel", "Kernel (MANDATORY)")):  # fmt: skip
        digest = hashlib.sha256((rel / name).read_bytes()).hexdigest()
        lines.append(f'{name}\t{digest}\t100\t{dist}\t"{desc}"\ton\n')
    (rel / "MANIFEST").write_text("".join(lines))
    return rel


def test_import_release_checks_base_txz_against_the_manifest(
    rex: Rex, busybox_root: Path, tmp_path: Path, ca: tuple[trustme.CA, Path]
) -> None:
    rel = release_dir(tmp_path, busybox_root)
    base_txz = rel / "base.txz"
    good = base_txz.read_bytes()
    base_txz.write_bytes(good + b"\0")
    rex.env["REX_CA_BUNDLE"] = str(ca[1])
    with FileServer(tmp_path / "www", netns=rex.netns, tls=ca[0]) as server:
        url = f"{server.url}/releases/amd64/14.1-RELEASE/"
        bad = rex.run("base", "import-release", url, "fbsd", check=False)
        assert bad.returncode == VERIFY, bad.stderr
        assert "base.txz does not match its manifest" in bad.stderr
        assert sh("zfs", "list", f"{rex.dataset}/bases/fbsd", check=False).returncode != 0
        assert list((rex.root / "cache" / "releases").iterdir()) == []
        base_txz.write_bytes(good)
        done = rex.run("base", "import-release", url, "fbsd")
    assert done.stdout.strip() == f"{rex.dataset}/bases/fbsd@14.1-RELEASE-p3"
    [entry] = [b for b in rex.json("base", "ls") if b["name"] == "fbsd"]  # type: ignore[attr-defined]
    assert entry["osrelease"] == "14.1-RELEASE-p3" and entry["url"] == url
    assert entry["signer"] == []
    assert "none (release MANIFEST)" in rex.run("base", "ls").stdout


def test_import_release_from_a_file_url(rex: Rex, busybox_root: Path, tmp_path: Path) -> None:
    rel = release_dir(tmp_path, busybox_root)
    rex.run("base", "import-release", f"file://{rel}/MANIFEST", "fbsd")
    data = json.loads(rex.run("-o", "json", "base", "ls").stdout)
    assert [b["version"] for b in data if b["name"] == "fbsd"] == ["14.1-RELEASE-p3"]
    (rel / "MANIFEST").write_text((rel / "MANIFEST").read_text().replace("base.txz", "base2.txz"))
    bad = rex.run("base", "import-release", f"file://{rel}", "other", check=False)
    assert bad.returncode == VERIFY and "does not list base.txz" in bad.stderr


# -- new versions: increments -----------------------------------------------------------


def golden_versions(rex: Rex, keys: Keys, busybox_root: Path, where: Path) -> dict[str, Path]:
    """``bbinc`` published by a publisher host of its own (its own state and
    dataset), a small change to a larger tree: ``v1``; ``v2`` over it with
    ``--incremental-from 1``; and ``v2other``, the same versions made again from
    scratch (other snapshots: other guids), also with an increment from 1."""
    if "versions" in _GOLDEN:
        return {n: _GOLDEN["versions"] / n for n in ("v1", "v2", "v2other")}
    env = {**rex.env, "REX_ROOT": str(where / "pubstate"), "REX_DATASET": f"{rex.dataset}p"}
    pub = Rex(root=where / "pubstate", dataset=f"{rex.dataset}p", netns=rex.netns, env=env)
    sign = ("--key", keys.publisher.key, "--cert", keys.publisher.cert)
    tree = where / "tree"
    try:
        shutil.copytree(busybox_root, tree, symlinks=True)
        (tree / "big.bin").write_bytes(random.Random(7).randbytes(6 << 20))  # incompressible
        for lineage, name in (("v1", "v2"), (None, "v2other")):
            out = where / f"out-{name}"
            (tree / "etc" / "motd").write_text("v1\n")
            (tree / "etc" / "added").unlink(missing_ok=True)
            pub.run("base", "import", tree, "bbinc", "--version", "1")
            if lineage:
                pub.run("base", "publish", "bbinc", out, *sign)
                shutil.copytree(out, where / lineage)
            (tree / "etc" / "motd").write_text("v2\n")
            (tree / "etc" / "added").write_text("new in version 2\n")
            pub.run("base", "import", tree, "bbinc", "--version", "2")  # the same dataset
            # a newer version over the older publication: no --force
            pub.run("base", "publish", "bbinc", out, "--incremental-from", "1", *sign)
            shutil.copytree(out, where / name)
            pub.run("base", "rm", "bbinc")
    finally:
        drop_dataset(pub.dataset)
        shutil.rmtree(pub.root, ignore_errors=True)
    _GOLDEN["versions"] = where
    return golden_versions(rex, keys, busybox_root, where)


def drop_dataset(dataset: str) -> None:
    """Destroy a dataset tree, unmounting what zfs-fuse calls busy."""
    for _ in range(30):
        if sh("zfs", "destroy", "-r", dataset, check=False).returncode == 0:
            return
        _unmount_below(dataset)
        time.sleep(0.1)
    raise AssertionError(f"cannot destroy {dataset}")


@dataclass
class VersionSite:
    server: FileServer
    dir: Path
    published: dict[str, Path]

    @property
    def url(self) -> str:
        return f"{self.server.url}/bases/bbinc"

    def serve(self, which: str) -> None:
        """What the URL publishes now: replaced as a publisher's rsync would."""
        for old in self.dir.iterdir():
            old.unlink()
        for f in self.published[which].iterdir():
            shutil.copy(f, self.dir / f.name)
        self.server.control.sent.clear()
        self.server.control.log.clear()

    def stream(self, suffix: str = ".zfs.bz2") -> Path:
        return self.dir / f"bbinc{suffix}"


@pytest.fixture
def vsite(
    rex: Rex, keys: Keys, ca: tuple[trustme.CA, Path], busybox_root: Path, tmp_path: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[VersionSite]:  # fmt: skip
    published = golden_versions(rex, keys, busybox_root, tmp_path_factory.mktemp("versions"))
    (tmp_path / "www" / "bases").mkdir(parents=True)
    rex.env["REX_CA_BUNDLE"] = str(ca[1])
    rex.run("trust", "add", keys.publisher.cert)
    with FileServer(tmp_path / "www", netns=rex.netns, tls=ca[0]) as server:
        yield VersionSite(server, tmp_path / "www" / "bases", published)


def base_snapshots(rex: Rex) -> list[str]:
    out = sh("zfs", "list", "-H", "-o", "name", "-t", "snapshot", "-r", f"{rex.dataset}/bases")
    return [n.split("/bases/", 1)[1] for n in out.stdout.split() if "/bases/busybox@" not in n]


def bbinc(rex: Rex) -> dict[str, Any]:
    [entry] = [b for b in rex.json("base", "ls") if b["name"] == "bbinc"]  # type: ignore[attr-defined]
    assert isinstance(entry, dict)
    return entry


def test_a_new_version_arrives_as_an_increment(
    rex: Rex, vsite: VersionSite, tmp_path: Path
) -> None:
    vsite.serve("v1")
    assert rex.run("base", "fetch", vsite.url).stdout.strip() == f"{rex.dataset}/bases/bbinc@1"
    v1_digest = bbinc(rex)["digest"]
    vsite.serve("v2")
    # the plain recipe still checks the published files: one manifest lists all three
    check = sh("sha256sum", "-c", "bbinc.sha256", cwd=vsite.dir)
    assert check.stdout.count(": OK") == 3 and "bbinc.from-1.zfs.bz2: OK" in check.stdout
    done = rex.run("base", "fetch", vsite.url)
    assert done.stdout.strip() == f"{rex.dataset}/bases/bbinc@2"
    assert "as the increment from 1" in done.stderr, done.stderr
    increment, full = vsite.stream(".from-1.zfs.bz2"), vsite.stream()
    assert vsite.server.control.gets("bbinc.zfs.bz2") == []  # the full stream: not even asked
    assert vsite.server.control.bytes_sent(".zfs.bz2") == increment.stat().st_size
    assert increment.stat().st_size * 50 < full.stat().st_size  # 6 MB base, a few files changed
    assert base_snapshots(rex) == ["bbinc@1", "bbinc@2"]  # one dataset: blocks shared
    meta = Path(vsite.published["v2"] / "bbinc.base").read_text()
    guid = sh("zfs", "get", "-Hp", "-o", "value", "guid", f"{rex.dataset}/bases/bbinc@2").stdout
    assert f"guid={guid.strip()}\n" in meta  # the publisher's snapshot, exactly
    entry = bbinc(rex)
    assert entry["version"] == "2" and entry["snapshot"] == "bases/bbinc@2"
    assert [(v["version"], v["current"]) for v in entry["versions"]] == [("1", False), ("2", True)]
    [row] = [r.split() for r in rex.run("base", "ls").stdout.splitlines() if r.startswith("bbinc")]
    assert row[:3] == ["bbinc", "2", "1"] and row[-2:] == ["MiB", "-"]  # the size of version 2
    # BASE URL builds on the current version; a pin keeps a jail on the old one
    vsite.server.control.log.clear()
    for name, pin, motd in (("new", "", "v2\n"), ("old", f" sha256:{v1_digest}", "v1\n")):
        (tmp_path / f"{name}.rex").write_text(f"BASE {vsite.url}{pin}\n")
        rex.run("up", tmp_path / f"{name}.rex")
        assert rex.run("exec", name, "--", "cat", "/etc/motd").stdout == motd
    assert len(vsite.server.control.log) == 0  # both from the local versions
    rm = rex.run("base", "rm", "bbinc@1", check=False)
    assert rm.returncode == 12 and "bbinc@1 is used by jails: old" in rm.stderr
    rex.run("destroy", "old")
    rex.run("base", "rm", "bbinc@1")
    assert base_snapshots(rex) == ["bbinc@2"]
    rex.run("destroy", "new")


def test_a_host_without_the_old_version_gets_the_full_stream(rex: Rex, vsite: VersionSite) -> None:
    vsite.serve("v2")
    done = rex.run("base", "fetch", vsite.url)
    assert done.stdout.strip() == f"{rex.dataset}/bases/bbinc@2"
    assert vsite.server.control.gets(".from-1.zfs.bz2") == []
    assert vsite.server.control.bytes_sent(".zfs.bz2") == vsite.stream().stat().st_size
    assert base_snapshots(rex) == ["bbinc@2"]


def test_a_tampered_increment_is_refused_and_changes_nothing(rex: Rex, vsite: VersionSite) -> None:
    vsite.serve("v1")
    rex.run("base", "fetch", vsite.url)
    vsite.serve("v2")
    increment = vsite.stream(".from-1.zfs.bz2")
    data = bytearray(increment.read_bytes())
    data[len(data) // 2] ^= 0x01
    increment.write_bytes(bytes(data))
    err = refused(rex, vsite.url)
    assert "bbinc.from-1.zfs.bz2 does not match its manifest: sha256" in err
    assert vsite.server.control.gets("bbinc.zfs.bz2") == []  # no fallback to the full stream
    assert base_snapshots(rex) == ["bbinc@1"] and bbinc(rex)["version"] == "1"
    assert len(list((rex.root / "cache" / "bases").glob("*.zfs.bz2"))) == 1  # v1's only


def test_an_old_version_that_is_not_the_published_snapshot_gets_the_full_stream(
    rex: Rex, vsite: VersionSite
) -> None:
    vsite.serve("v1")
    rex.run("base", "fetch", vsite.url)
    vsite.serve("v2other")  # its increment applies to another snapshot named 1
    done = rex.run("base", "fetch", vsite.url)
    assert "bbinc@1 here is not the published snapshot" in done.stderr, done.stderr
    assert done.stdout.strip() == f"{rex.dataset}/bases/bbinc:2@2"
    assert vsite.server.control.gets(".from-1.zfs.bz2") == []
    assert vsite.server.control.bytes_sent(".zfs.bz2") == vsite.stream().stat().st_size
    # the full stream in a dataset of its own; version 1 stays where jails use it
    assert base_snapshots(rex) == ["bbinc@1", "bbinc:2@2"]
    assert [v["snapshot"] for v in bbinc(rex)["versions"]] == ["bases/bbinc@1", "bases/bbinc:2@2"]
    rex.run("base", "rm", "bbinc")
    only_busybox(rex)
