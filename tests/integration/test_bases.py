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
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import trustme

from tests.base_support import Signer, dated_signer, openssl_signer, resign
from tests.capability import linux_only
from tests.integration.base_server import FileServer
from tests.integration.conftest import Rex, sh


@pytest.fixture(autouse=True)
def _linux_only() -> None:
    linux_only(
        "publishes the busybox base and serves it from a server in the test's network namespace"
    )


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
